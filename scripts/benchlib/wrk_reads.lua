-- wrk script: random reads of a log of $TLOG_SIZE entries.  $TLOG_READ = "proof" (inclusion proofs
-- at the full size) or "tile" (level-0 hash tiles, full ones).
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  size = tonumber(os.getenv("TLOG_SIZE"))
  kind = os.getenv("TLOG_READ") or "proof"
  math.randomseed(os.time() * 1000 + id)
end

local function tile_path(n)
  local s = string.format("%d", n)
  while #s % 3 ~= 0 do s = "0" .. s end
  local parts = {}
  for i = 1, #s, 3 do parts[#parts + 1] = s:sub(i, i + 2) end
  for i = 1, #parts - 1 do parts[i] = "x" .. parts[i] end
  return table.concat(parts, "/")
end

function request()
  if kind == "tile" then
    local n = math.random(0, math.floor(size / 256) - 1)
    return wrk.format("GET", "/tile/0/" .. tile_path(n))
  end
  local i = math.random(0, size - 1)
  return wrk.format("GET", "/v1/proofs/inclusion?index=" .. i .. "&tree_size=" .. size)
end
