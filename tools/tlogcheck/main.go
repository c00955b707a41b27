// Command tlogcheck checks what an Agora gateway serves under /transparency/
// with Go's reference implementations of signed notes and RFC 6962 proofs
// (golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog).
//
//	tlogcheck -url http://127.0.0.1:8080 -vkey '<name>+<id>+<key>' [-origin O] [-from N] [-records FILE] [-decision-id ID]
//
// It verifies the latest checkpoint's signature, inclusion proofs of the first,
// middle and last records, a consistency proof from the checkpoint signed at
// size -from (if given), and the records of -decision-id (if given). With
// -records (the log file, holding the chain from seq 1), it also checks that
// each leaf hash is the RFC 6962 record hash of the record's canonical bytes.
// It prints one line per check and exits 1 at the first failure.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index    int64    `json:"index"`
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
}

type inclusions struct {
	TreeSize   int64       `json:"tree_size"`
	RootHash   string      `json:"root_hash"`
	Inclusions []inclusion `json:"inclusions"`
}

type consistency struct {
	From  int64    `json:"from"`
	To    int64    `json:"to"`
	Proof []string `json:"proof"`
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

var base string

func main() {
	gateway := flag.String("url", "", "the gateway's public URL")
	vkey := flag.String("vkey", "", "the log's verifier key")
	from := flag.Int64("from", 0, "check consistency from the checkpoint signed at this size")
	records := flag.String("records", "", "the log file, to check leaf hashes against records")
	decisionID := flag.String("decision-id", "", "check the inclusion of this decision's records")
	origin := flag.String("origin", "", "the log's origin (default: the verifier key's name)")
	flag.Parse()
	base = strings.TrimRight(*gateway, "/")
	verifier, err := note.NewVerifier(*vkey)
	check(err, "verifier key")
	if *origin == "" {
		*origin = verifier.Name()
	}

	head := fetchCheckpoint(verifier, *origin, "/transparency/checkpoint")
	fmt.Printf("ok checkpoint signature: %s size %d\n", head.origin, head.size)

	var lines [][]byte
	if *records != "" {
		lines = readLines(*records)
	}
	for _, index := range []int64{0, head.size / 2, head.size - 1} {
		var got inclusions
		getJSON(fmt.Sprintf("/transparency/proof/inclusion?index=%d&size=%d", index, head.size), &got)
		checkInclusions(got, head, lines)
	}
	if *decisionID != "" {
		var got inclusions
		query := url.Values{"decision_id": {*decisionID}, "size": {strconv.FormatInt(head.size, 10)}}
		getJSON("/transparency/proof/inclusion?"+query.Encode(), &got)
		checkInclusions(got, head, lines)
	}
	if *from > 0 {
		old := fetchCheckpoint(verifier, *origin, fmt.Sprintf("/transparency/checkpoint?size=%d", *from))
		var got consistency
		getJSON(fmt.Sprintf("/transparency/proof/consistency?from=%d&to=%d", old.size, head.size), &got)
		err := tlog.CheckTree(tlog.TreeProof(hashes(got.Proof)), head.size, head.root, old.size, old.root)
		check(err, fmt.Sprintf("consistency proof %d -> %d", old.size, head.size))
		fmt.Printf("ok consistency %d -> %d\n", old.size, head.size)
	}
}

func checkInclusions(got inclusions, head checkpoint, lines [][]byte) {
	if got.TreeSize != head.size || hash(got.RootHash) != head.root {
		fail("inclusion proof for a tree other than the checkpoint's")
	}
	if len(got.Inclusions) == 0 {
		fail("no inclusion proofs in the answer")
	}
	for _, each := range got.Inclusions {
		leaf := hash(each.LeafHash)
		err := tlog.CheckRecord(tlog.RecordProof(hashes(each.Proof)), head.size, head.root, each.Index, leaf)
		check(err, fmt.Sprintf("inclusion proof of %d", each.Index))
		fmt.Printf("ok inclusion %d in %d\n", each.Index, head.size)
		if lines != nil {
			line := lines[each.Index]
			cut := bytes.LastIndex(line, []byte(`,"hash":"sha256:`))
			if cut < 0 {
				fail(fmt.Sprintf("record %d has no hash member", each.Index))
			}
			canonical := append(append([]byte{}, line[:cut]...), '}')
			if tlog.RecordHash(canonical) != leaf {
				fail(fmt.Sprintf("leaf %d is not the record hash of record seq %d", each.Index, each.Index+1))
			}
			fmt.Printf("ok leaf %d is the record's canonical bytes\n", each.Index)
		}
	}
}

func fetchCheckpoint(verifier note.Verifier, origin string, path string) checkpoint {
	msg := get(path)
	n, err := note.Open(msg, note.VerifierList(verifier))
	check(err, "checkpoint note "+path)
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != origin {
		fail("checkpoint text is not <origin>\\n<size>\\n<root>\\n of log " + origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	check(err, "checkpoint size")
	return checkpoint{lines[0], size, hash(lines[2])}
}

func hashes(encoded []string) []tlog.Hash {
	out := make([]tlog.Hash, len(encoded))
	for i, e := range encoded {
		out[i] = hash(e)
	}
	return out
}

func hash(encoded string) tlog.Hash {
	raw, err := base64.StdEncoding.DecodeString(encoded)
	check(err, "base64 hash")
	if len(raw) != tlog.HashSize {
		fail("a hash is not 32 bytes")
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h
}

func readLines(path string) [][]byte {
	file, err := os.Open(path)
	check(err, "records")
	defer file.Close()
	var lines [][]byte
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		lines = append(lines, append([]byte{}, scanner.Bytes()...))
	}
	check(scanner.Err(), "records")
	return lines
}

func getJSON(path string, into any) {
	check(json.Unmarshal(get(path), into), "JSON of "+path)
}

func get(path string) []byte {
	response, err := http.Get(base + path)
	check(err, path)
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	check(err, path)
	if response.StatusCode != http.StatusOK {
		fail(fmt.Sprintf("%s: HTTP %d %s", path, response.StatusCode, body))
	}
	return body
}

func check(err error, what string) {
	if err != nil {
		fail(fmt.Sprintf("%s: %v", what, err))
	}
}

func fail(message string) {
	fmt.Println("FAILED", message)
	os.Exit(1)
}
