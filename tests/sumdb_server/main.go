// Command sumdb_server is a checksum database for goprox's end-to-end tests: an in-memory
// tree of the go.sum lines it is given, signed with a key it makes up, served on 127.0.0.1
// with golang.org/x/mod/sumdb's own server (/lookup/, /tile/, /latest).
//
// Lines (from -records FILE, or stdin) are go.sum lines, `<module> <version> h1:...` and
// `<module> <version>/go.mod h1:...`; the lines of one module version make one record. Every
// record is added at start-up, in the order of the lines, so the tree never changes while the
// server runs. On stdout it prints two lines, `vkey <verifier key>` (a GOSUMDB value) and
// `addr <host:port>`; every request it receives is appended to -log FILE as `<method> <path>`.
//
// Built in GOPATH mode against Debian's golang-golang-x-mod-dev:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local go build -o sumdbd ./tests/sumdb_server
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	name := flag.String("name", "sumdb.test", "the database's (and its key's) name")
	records := flag.String("records", "-", "file of go.sum lines (- for stdin)")
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (127.0.0.1 only)")
	logPath := flag.String("log", "", "append one line per request to this file")
	flag.Parse()
	log.SetPrefix("sumdb_server: ")
	log.SetFlags(0)

	host, _, err := net.SplitHostPort(*addr)
	if err != nil || host != "127.0.0.1" {
		log.Fatalf("-addr %q: must be 127.0.0.1:PORT", *addr)
	}
	var in io.Reader = os.Stdin
	if *records != "-" {
		f, err := os.Open(*records)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		in = f
	}
	byVersion := map[module.Version][]byte{}
	var order []module.Version
	sc := bufio.NewScanner(in)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[2], "h1:") {
			log.Fatalf("line %d: not a go.sum line: %q", n, line)
		}
		m := module.Version{Path: f[0], Version: strings.TrimSuffix(f[1], "/go.mod")}
		if _, ok := byVersion[m]; !ok {
			order = append(order, m)
		}
		byVersion[m] = append(byVersion[m], strings.Join(f, " ")+"\n"...)
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}

	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		log.Fatal(err)
	}
	ops := sumdb.NewTestServer(skey, func(path, vers string) ([]byte, error) {
		if data, ok := byVersion[module.Version{Path: path, Version: vers}]; ok {
			return data, nil
		}
		return nil, os.ErrNotExist
	})
	for _, m := range order {
		if _, err := ops.Lookup(context.Background(), m); err != nil {
			log.Fatalf("adding %v: %v", m, err)
		}
	}
	srv := sumdb.NewServer(ops)

	var logf io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		logf = f
	}
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fmt.Fprintf(logf, "%s %s\n", r.Method, r.URL.EscapedPath())
		mu.Unlock()
		srv.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("vkey %s\naddr %s\n", vkey, ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, handler))
}
