-- wrk script: POST pre-signed bodies, one per line of the file named by $TLOG_BODIES, each request a
-- different line (thread k of n takes lines k, k+n, ...), so no request is a duplicate.
-- No response() callback: wrk then hands each answer's headers and body to Lua, which costs the
-- generator CPU on the same two cores; wrk counts non-2xx answers itself.  Each request is formatted
-- once, in init(), not on every send.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local path = os.getenv("TLOG_BODIES")
  local nthreads = tonumber(os.getenv("TLOG_THREADS") or "1")
  bodies = {}
  local i = 0
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(path) do
    if i % nthreads == id then
      bodies[#bodies + 1] = wrk.format("POST", "/v1/entries", headers, line)
    end
    i = i + 1
  end
  pos = 0
end

function request()
  pos = pos + 1
  if pos > #bodies then
    pos = 1  -- wrapped: from here on the server answers duplicates (200), which the report counts apart
  end
  return bodies[pos]
end
