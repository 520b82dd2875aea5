// Command sumdb_check checks that tlog and Go's golang.org/x/mod/sumdb/{note,tlog} understand each
// other. It uses only the Go library to verify; tests/test_interop_go.py builds and drives it.
//
//	sumdb_check check < request.json   verify a running `tlog serve` over real HTTP
//	sumdb_check emit                   print Go-made keys, notes, tiles and proofs for tlog to verify
//
// Both modes print one JSON object on stdout. `check` exits 1 with {"ok": false, "stage", "error"} at
// the first failure, so a wrong tile, entry bundle, signature or key is reported by Go itself.
//
// Two translations are needed, both outside the Go library's verification logic:
//   - Go's Tile.Path() for sumdb is tile/H/L/N[.p/W] (tile/8/data/... for record data); C2SP
//     tlog-tiles drops the height and calls data tiles "entries": tile/L/N[.p/W], tile/entries/N[.p/W].
//   - tlog.ParseTree (x/mod 0.7.0) accepts only the sumdb origin line "go.sum database tree"; C2SP
//     checkpoints carry the log's own origin on line 1 and are otherwise the same 3 lines (extension
//     lines after them are ignored by ParseTree). We report ParseTree's verdict on the raw text, then
//     parse lines 2-3 with ParseTree after putting the sumdb origin line in front of them.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

// checkRequest is read from stdin in `check` mode.
type checkRequest struct {
	URL            string   `json:"url"`
	Vkey           string   `json:"vkey"`
	Skey           string   `json:"skey,omitempty"`            // the log's signer key, to sign the same text in Go
	OldCheckpoints []string `json:"old_checkpoints,omitempty"` // earlier signed checkpoints of the same log
	ExtraNotes     []string `json:"extra_notes,omitempty"`     // more notes that must open with vkey (e.g. cosigned)
	OtherVkeys     []string `json:"other_vkeys,omitempty"`     // keys to report NewVerifier's verdict on
}

type failure struct {
	OK    bool   `json:"ok"`
	Stage string `json:"stage"`
	Error string `json:"error"`
}

func fail(stage string, err error) {
	out, _ := json.Marshal(failure{false, stage, err.Error()})
	os.Stdout.Write(append(out, '\n'))
	os.Exit(1)
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

func hashes64(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = b64(h)
	}
	return out
}

// c2spPath maps Go's sumdb tile path (tile/8/L/N[.p/W], tile/8/data/N[.p/W]) to C2SP tlog-tiles.
func c2spPath(t tlog.Tile) string {
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", tileHeight)
	if t.H != tileHeight || !strings.HasPrefix(p, prefix) {
		panic("unexpected tile " + p)
	}
	rest := p[len(prefix):]
	if strings.HasPrefix(rest, "data/") {
		rest = "entries/" + rest[len("data/"):]
	}
	return "tile/" + rest
}

// httpTiles is a tlog.TileReader over a tlog server. It caches what it downloaded in memory (the
// TileHashReader re-authenticates cached tiles against the tree on every call anyway).
type httpTiles struct {
	base    string
	client  *http.Client
	cache   map[string][]byte
	fetched map[string]bool
}

func newHTTPTiles(base string) *httpTiles {
	return &httpTiles{strings.TrimRight(base, "/"), &http.Client{Timeout: 30 * time.Second},
		map[string][]byte{}, map[string]bool{}}
}

// get fetches a tile or entry bundle once.
func (r *httpTiles) get(path string) ([]byte, error) {
	if data, ok := r.cache[path]; ok {
		return data, nil
	}
	data, err := r.fetch(path)
	if err != nil {
		return nil, err
	}
	r.cache[path] = data
	r.fetched[path] = true
	return data, nil
}

func (r *httpTiles) fetch(path string) ([]byte, error) {
	resp, err := r.client.Get(r.base + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<24))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return data, nil
}

func (r *httpTiles) Height() int { return tileHeight }

func (r *httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := r.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r *httpTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// parseCheckpoint parses a C2SP checkpoint text with tlog.ParseTree (see the package comment).
func parseCheckpoint(text string) (origin string, tree tlog.Tree, rawErr error, err error) {
	_, rawErr = tlog.ParseTree([]byte(text))
	i := strings.IndexByte(text, '\n')
	if i <= 0 {
		return "", tlog.Tree{}, rawErr, errors.New("checkpoint has no origin line")
	}
	tree, err = tlog.ParseTree([]byte("go.sum database tree\n" + text[i+1:]))
	return text[:i], tree, rawErr, err
}

// openCheckpoint opens a signed checkpoint with Go's note.Open and parses it.
func openCheckpoint(msg []byte, verifiers note.Verifiers, origin string) (*note.Note, tlog.Tree, error) {
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return nil, tlog.Tree{}, fmt.Errorf("note.Open: %w", err)
	}
	got, tree, _, err := parseCheckpoint(n.Text)
	if err != nil {
		return nil, tlog.Tree{}, fmt.Errorf("tlog.ParseTree: %w", err)
	}
	if origin != "" && got != origin {
		return nil, tlog.Tree{}, fmt.Errorf("checkpoint origin %q, want %q", got, origin)
	}
	return n, tree, nil
}

// decodeBundle splits a C2SP entry bundle (uint16 big-endian length || entry, repeated).
func decodeBundle(data []byte, want int) ([][]byte, error) {
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+n {
			return nil, fmt.Errorf("entry of %d bytes, %d left", n, len(data)-2)
		}
		entries = append(entries, data[2:2+n])
		data = data[2+n:]
	}
	if len(entries) != want {
		return nil, fmt.Errorf("bundle holds %d entries, want %d", len(entries), want)
	}
	return entries, nil
}

type treeProofOut struct {
	Old     int64    `json:"old"`
	OldRoot string   `json:"old_root"`
	Proof   []string `json:"proof"`
}

type checkResult struct {
	OK             bool           `json:"ok"`
	Origin         string         `json:"origin"`
	KeyName        string         `json:"key_name"`
	KeyHash        string         `json:"key_hash"`
	Size           int64          `json:"size"`
	Root           string         `json:"root"`
	ParseTreeRaw   string         `json:"parse_tree_raw"` // ParseTree's error on the untouched text, or ""
	TreeHash       string         `json:"tree_hash"`
	Leaves         int            `json:"leaves"`
	RecordProofs   [][]string     `json:"record_proofs"`    // index i: ProveRecord(size, i)
	TreeProofs     []treeProofOut `json:"tree_proofs"`      // ProveTree(m, size) for every 1 <= m < size
	OldCheckpoints []int64        `json:"old_checkpoints"`  // sizes of the old checkpoints verified
	GoSignedNote   string         `json:"go_signed_note"`   // the checkpoint text signed by Go with skey
	ExtraNotes     int            `json:"extra_notes"`      // how many extra notes opened
	OtherVkeys     []string       `json:"other_vkeys"`      // NewVerifier's error per other vkey, "" if accepted
	TilesFetched   []string       `json:"tiles_fetched"`    // the C2SP paths Go's reader asked for
	NewTilesServed int            `json:"new_tiles_served"` // tiles of NewTiles(8, 0, size) all served
}

func check() {
	var req checkRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail("request", err)
	}
	var res checkResult
	v, err := note.NewVerifier(req.Vkey)
	if err != nil {
		fail("note.NewVerifier", err)
	}
	res.KeyName, res.KeyHash = v.Name(), fmt.Sprintf("%08x", v.KeyHash())
	verifiers := note.VerifierList(v)
	tiles := newHTTPTiles(req.URL)

	msg, err := tiles.fetch("checkpoint")
	if err != nil {
		fail("fetch checkpoint", err)
	}
	n, tree, err := openCheckpoint(msg, verifiers, "")
	if err != nil {
		fail("open checkpoint", err)
	}
	origin, _, rawErr, _ := parseCheckpoint(n.Text)
	res.Origin = origin
	if rawErr != nil {
		res.ParseTreeRaw = rawErr.Error()
	}
	if res.Origin != v.Name() {
		fail("origin", fmt.Errorf("checkpoint origin %q is not the key name %q", res.Origin, v.Name()))
	}
	res.Size, res.Root = tree.N, b64(tree.Hash)

	if req.Skey != "" {
		signer, err := note.NewSigner(req.Skey)
		if err != nil {
			fail("note.NewSigner", err)
		}
		signed, err := note.Sign(&note.Note{Text: n.Text}, signer)
		if err != nil {
			fail("note.Sign", err)
		}
		res.GoSignedNote = string(signed)
	}

	hr := tlog.TileHashReader(tree, tiles)
	th, err := tlog.TreeHash(tree.N, hr)
	if err != nil {
		fail("tlog.TreeHash", err)
	}
	if th != tree.Hash {
		fail("tlog.TreeHash", fmt.Errorf("tree hash %s, checkpoint root %s", th, tree.Hash))
	}
	res.TreeHash = b64(th)

	// Every leaf from the entry bundles, proven into the checkpoint.
	var leaves [][]byte
	for k := int64(0); k*256 < tree.N; k++ {
		w := tree.N - k*256
		if w > 256 {
			w = 256
		}
		path := c2spPath(tlog.Tile{H: tileHeight, L: -1, N: k, W: int(w)})
		data, err := tiles.get(path)
		if err != nil {
			fail("fetch entry bundle", err)
		}
		entries, err := decodeBundle(data, int(w))
		if err != nil {
			fail("entry bundle", fmt.Errorf("%s: %w", path, err))
		}
		leaves = append(leaves, entries...)
	}
	// CheckRecord matters even after TileHashReader: x/mod 0.7.0 does not authenticate every full tile
	// it reads (see MUTATIONS in tests/test_interop_go.py), so a corrupt tile can give a wrong proof.
	for i, leaf := range leaves {
		p, err := tlog.ProveRecord(tree.N, int64(i), hr)
		if err != nil {
			fail("tlog.ProveRecord", fmt.Errorf("leaf %d: %w", i, err))
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, int64(i), tlog.RecordHash(leaf)); err != nil {
			fail("tlog.CheckRecord", fmt.Errorf("leaf %d: %w", i, err))
		}
		res.RecordProofs = append(res.RecordProofs, hashes64(p))
	}
	res.Leaves = len(leaves)

	// Consistency from every smaller size to the checkpoint.
	for m := int64(1); m < tree.N; m++ {
		old, err := tlog.TreeHash(m, hr)
		if err != nil {
			fail("tlog.TreeHash", fmt.Errorf("size %d: %w", m, err))
		}
		p, err := tlog.ProveTree(tree.N, m, hr)
		if err != nil {
			fail("tlog.ProveTree", fmt.Errorf("%d -> %d: %w", m, tree.N, err))
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, m, old); err != nil {
			fail("tlog.CheckTree", fmt.Errorf("%d -> %d: %w", m, tree.N, err))
		}
		res.TreeProofs = append(res.TreeProofs, treeProofOut{m, b64(old), hashes64(p)})
	}

	// Earlier signed checkpoints: each opens, its own tiles (narrower partial tiles) give its root,
	// and it is consistent with the latest one.
	for _, oldMsg := range req.OldCheckpoints {
		_, old, err := openCheckpoint([]byte(oldMsg), verifiers, res.Origin)
		if err != nil {
			fail("open old checkpoint", err)
		}
		oh, err := tlog.TreeHash(old.N, tlog.TileHashReader(old, tiles))
		if err != nil {
			fail("tlog.TreeHash (old checkpoint)", fmt.Errorf("size %d: %w", old.N, err))
		}
		if oh != old.Hash {
			fail("tlog.TreeHash (old checkpoint)", fmt.Errorf("size %d: tiles give %s, checkpoint says %s", old.N, oh, old.Hash))
		}
		if old.N > 0 && old.N <= tree.N {
			p, err := tlog.ProveTree(tree.N, old.N, hr)
			if err == nil {
				err = tlog.CheckTree(p, tree.N, tree.Hash, old.N, old.Hash)
			}
			if err != nil {
				fail("tlog.CheckTree (old checkpoint)", fmt.Errorf("%d -> %d: %w", old.N, tree.N, err))
			}
		}
		res.OldCheckpoints = append(res.OldCheckpoints, old.N)
	}

	for _, extra := range req.ExtraNotes {
		if _, _, err := openCheckpoint([]byte(extra), verifiers, res.Origin); err != nil {
			fail("open extra note", err)
		}
		res.ExtraNotes++
	}
	res.OtherVkeys = []string{}
	for _, k := range req.OtherVkeys {
		msg := ""
		if _, err := note.NewVerifier(k); err != nil {
			msg = err.Error()
		}
		res.OtherVkeys = append(res.OtherVkeys, msg)
	}

	// Every tile a sumdb server would publish for this size, at every partial width (a Go client that
	// trusts an older checkpoint asks for narrower partial tiles), is served, and a narrower tile is
	// the prefix of the wider one.
	for _, t := range tlog.NewTiles(tileHeight, 0, tree.N) {
		data, err := tiles.get(c2spPath(t))
		if err != nil {
			fail("tlog.NewTiles", err)
		}
		want, err := tlog.ReadTileData(t, hr)
		if err != nil {
			fail("tlog.ReadTileData", err)
		}
		if string(data) != string(want) {
			fail("tlog.NewTiles", fmt.Errorf("%s differs from the authenticated hashes", c2spPath(t)))
		}
		res.NewTilesServed++
	}

	for p := range tiles.fetched {
		res.TilesFetched = append(res.TilesFetched, p)
	}
	sort.Strings(res.TilesFetched)
	res.OK = true
	out, _ := json.Marshal(res)
	os.Stdout.Write(append(out, '\n'))
}

// --- emit: Go-made material for tlog to verify --------------------------------------------------

// Go's own test vectors (golang.org/x/mod/sumdb/note/note_test.go).
const (
	peterSkey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
	peterVkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
	enochVkey = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
	quoteText = "If you think cryptography is the answer to your problem,\n" +
		"then you don't know what your problem is.\n"
	peterSig = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
	enochSig = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

	goOrigin  = "example.com/go-log"
	goRecords = 70000 // crosses the 65536 boundary: tiles at levels 0, 1 and 2 (the spec/tiles.md example)
)

type openVector struct {
	Msg        string   `json:"msg_b64"` // base64: some vectors are not valid UTF-8
	Vkeys      []string `json:"vkeys"`
	OK         bool     `json:"ok"`
	Error      string   `json:"error"`
	Sigs       []string `json:"sigs"`       // name+hash of the verified signatures
	Unverified []string `json:"unverified"` // name+hash of the others
}

func sigNames(sigs []note.Signature) []string {
	out := []string{}
	for _, s := range sigs {
		out = append(out, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return out
}

func openVectors() []openVector {
	bad := func(s string, i int) string { return s[:i] + "ABCD" + s[i:] }
	msgs := []string{
		quoteText + "\n" + peterSig,
		quoteText + "\n" + peterSig + enochSig,
		quoteText + "\n" + enochSig,
		quoteText + "\n" + peterSig + peterSig + enochSig + enochSig + bad(enochSig, 60),
		quoteText + "\n" + strings.Repeat(peterSig, 100),
		quoteText + "\n" + strings.Repeat(peterSig, 101),
		quoteText + "\n" + bad(peterSig, 60),
		quoteText,
		quoteText + "\n",
		quoteText + "\n" + peterSig[:len(peterSig)-1],
		"\x01" + quoteText + "\n" + peterSig,
		"\xff" + quoteText + "\n" + peterSig,
		quoteText + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
		quoteText + "\n" + peterSig + "Unexpected line.\n",
		quoteText + "\n" + strings.Replace(peterSig, "x08g", "xxxx", 1),
	}
	keySets := [][]string{{peterVkey}, {peterVkey, enochVkey}, {}}
	var out []openVector
	for _, msg := range msgs {
		for _, keys := range keySets {
			var vs []note.Verifier
			for _, k := range keys {
				v, err := note.NewVerifier(k)
				if err != nil {
					panic(err)
				}
				vs = append(vs, v)
			}
			vec := openVector{Msg: base64.StdEncoding.EncodeToString([]byte(msg)), Vkeys: append([]string{}, keys...),
				Sigs: []string{}, Unverified: []string{}}
			n, err := note.Open([]byte(msg), note.VerifierList(vs...))
			if err != nil {
				vec.Error = err.Error()
				var unverified *note.UnverifiedNoteError
				if errors.As(err, &unverified) {
					vec.Unverified = sigNames(unverified.Note.UnverifiedSigs)
				}
			} else {
				vec.OK = true
				vec.Sigs, vec.Unverified = sigNames(n.Sigs), sigNames(n.UnverifiedSigs)
			}
			out = append(out, vec)
		}
	}
	return out
}

// mangled returns every proper substring of key and every one-byte increment of it (as Go's
// TestNewVerifier and TestNewSigner do), split by whether parse accepts it.
func mangled(key string, parse func(string) error) (rejected, accepted []string) {
	rejected, accepted = []string{}, []string{}
	b := []byte(key)
	try := func(s string) {
		if parse(s) != nil {
			rejected = append(rejected, s)
		} else {
			accepted = append(accepted, s)
		}
	}
	for i := 0; i <= len(b); i++ {
		for j := i + 1; j <= len(b); j++ {
			if i != 0 || j != len(b) {
				try(string(b[i:j]))
			}
		}
	}
	for i := range b {
		b[i]++
		try(string(b))
		b[i]--
	}
	return rejected, accepted
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0
	}
	return len(p), nil
}

// memHashes is an in-memory tlog.HashReader indexed by stored hash index.
type memHashes []tlog.Hash

func (m *memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(*m)) {
			return nil, fmt.Errorf("hash index %d not stored", x)
		}
		out[i] = (*m)[x]
	}
	return out, nil
}

type inclusionOut struct {
	Index  int64    `json:"index"`
	Size   int64    `json:"size"`
	Record string   `json:"record"`
	Proof  []string `json:"proof"`
}

type consistencyOut struct {
	First     int64    `json:"first"`
	Second    int64    `json:"second"`
	FirstRoot string   `json:"first_root"`
	Proof     []string `json:"proof"`
}

type emitResult struct {
	PeterSkey     string            `json:"peter_skey"`
	PeterVkey     string            `json:"peter_vkey"`
	PeterNote     string            `json:"peter_note"`
	OpenVectors   []openVector      `json:"open_vectors"`
	BadVkeys      []string          `json:"bad_vkeys"`      // rejected by note.NewVerifier
	AcceptedVkeys []string          `json:"accepted_vkeys"` // manglings Go accepts (expected: none)
	BadSkeys      []string          `json:"bad_skeys"`
	AcceptedSkeys []string          `json:"accepted_skeys"`
	Skey          string            `json:"skey"` // GenerateKey(zero reader, goOrigin)
	Vkey          string            `json:"vkey"`
	Origin        string            `json:"origin"`
	RecordFormat  string            `json:"record_format"`
	Size          int64             `json:"size"`
	Root          string            `json:"root"`
	EmptyTreeHash string            `json:"empty_tree_hash"` // tlog.TreeHash(0, ...)
	Checkpoint    string            `json:"checkpoint"`      // C2SP checkpoint signed with note.Sign
	SumdbNote     string            `json:"sumdb_note"`      // tlog.FormatTree signed with note.Sign
	Tiles         map[string]string `json:"tiles"`           // C2SP path -> base64, widest tiles of NewTiles
	Inclusion     []inclusionOut    `json:"inclusion"`
	Consistency   []consistencyOut  `json:"consistency"`
}

func emit() {
	var res emitResult
	signer, err := note.NewSigner(peterSkey)
	if err != nil {
		panic(err)
	}
	peter, err := note.Sign(&note.Note{Text: quoteText}, signer)
	if err != nil {
		panic(err)
	}
	res.PeterSkey, res.PeterVkey, res.PeterNote = peterSkey, peterVkey, string(peter)
	res.OpenVectors = openVectors()
	res.BadVkeys, res.AcceptedVkeys = mangled(peterVkey, func(s string) error { _, err := note.NewVerifier(s); return err })
	res.BadSkeys, res.AcceptedSkeys = mangled(peterSkey, func(s string) error { _, err := note.NewSigner(s); return err })
	res.BadVkeys = append(res.BadVkeys,
		"PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", // wrong key length
		"PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")         // unknown algorithm

	// A log of goRecords records, hashed and tiled by Go.
	res.Skey, res.Vkey, err = note.GenerateKey(zeroReader{}, goOrigin)
	if err != nil {
		panic(err)
	}
	logSigner, err := note.NewSigner(res.Skey)
	if err != nil {
		panic(err)
	}
	res.Origin, res.RecordFormat, res.Size = goOrigin, "go record %d\n", goRecords
	record := func(i int64) []byte { return []byte(fmt.Sprintf(res.RecordFormat, i)) }
	store := memHashes{}
	for i := int64(0); i < goRecords; i++ {
		hs, err := tlog.StoredHashes(i, record(i), &store)
		if err != nil {
			panic(err)
		}
		store = append(store, hs...)
	}
	root, err := tlog.TreeHash(goRecords, &store)
	if err != nil {
		panic(err)
	}
	res.Root = b64(root)
	empty, err := tlog.TreeHash(0, &store)
	if err != nil {
		panic(err)
	}
	res.EmptyTreeHash = b64(empty)
	text := fmt.Sprintf("%s\n%d\n%s\n", goOrigin, int64(goRecords), root)
	cp, err := note.Sign(&note.Note{Text: text}, logSigner)
	if err != nil {
		panic(err)
	}
	res.Checkpoint = string(cp)
	sumdb, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: goRecords, Hash: root}))}, logSigner)
	if err != nil {
		panic(err)
	}
	res.SumdbNote = string(sumdb)

	res.Tiles = map[string]string{}
	newTiles := tlog.NewTiles(tileHeight, 0, goRecords)
	for i, t := range newTiles {
		if i+1 < len(newTiles) && newTiles[i+1].L == t.L && newTiles[i+1].N == t.N {
			continue // a narrower partial tile: keep the widest only
		}
		data, err := tlog.ReadTileData(t, &store)
		if err != nil {
			panic(err)
		}
		res.Tiles[c2spPath(t)] = base64.StdEncoding.EncodeToString(data)
	}

	for _, x := range []int64{0, 1, 2, 7, 255, 256, 257, 4095, 65535, 65536, 65537, 69999} {
		p, err := tlog.ProveRecord(goRecords, x, &store)
		if err != nil {
			panic(err)
		}
		res.Inclusion = append(res.Inclusion, inclusionOut{x, goRecords, string(record(x)), hashes64(p)})
	}
	pairs := [][2]int64{{1, 70000}, {2, 70000}, {3, 70000}, {255, 70000}, {256, 70000}, {257, 1000},
		{1000, 65536}, {65535, 65536}, {65536, 65537}, {65536, 70000}, {12345, 69999}, {69999, 70000}, {70000, 70000}}
	for _, pr := range pairs {
		old, err := tlog.TreeHash(pr[0], &store)
		if err != nil {
			panic(err)
		}
		p, err := tlog.ProveTree(pr[1], pr[0], &store)
		if err != nil {
			panic(err)
		}
		newRoot, err := tlog.TreeHash(pr[1], &store)
		if err != nil {
			panic(err)
		}
		if err := tlog.CheckTree(p, pr[1], newRoot, pr[0], old); err != nil {
			panic(err)
		}
		res.Consistency = append(res.Consistency, consistencyOut{pr[0], pr[1], b64(old), hashes64(p)})
	}
	out, err := json.Marshal(res)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sumdb_check check < request.json | sumdb_check emit")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "check":
		check()
	case "emit":
		emit()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
