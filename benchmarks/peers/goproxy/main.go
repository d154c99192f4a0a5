// Command goproxy is the Go peer for benchmarks/proxy_compare.py: a plain
// net/http/httputil.NewSingleHostReverseProxy in front of one upstream.
//
// Without -tuned it uses Go's http.DefaultTransport as shipped (notably
// MaxIdleConnsPerHost = 2, so at high concurrency most upstream connections
// are closed after each response and reopened: connection churn). With
// -tuned the transport keeps up to 10000 idle upstream connections, which is
// what a production Go proxy would configure.
//
// Standard library only (no module downloads). Build:
//
//	go build -o goproxy .
//
// Run (the benchmark sets GOMAXPROCS=1 for the one-worker comparison):
//
//	GOMAXPROCS=1 ./goproxy -listen 127.0.0.1:8081 -upstream http://127.0.0.1:8080 [-tuned]
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// bufferPool implements httputil.BufferPool with a sync.Pool of 32 KiB slices.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v := b.p.Get(); v != nil {
		return *(v.(*[]byte))
	}
	return make([]byte, 32*1024)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on (host:port)")
	upstream := flag.String("upstream", "http://127.0.0.1:8080", "upstream base URL")
	tuned := flag.Bool("tuned", false, "keep up to 10000 idle upstream connections instead of DefaultTransport's 2 per host")
	bufpool := flag.Bool("bufpool", false, "reuse 32 KiB copy buffers through a sync.Pool (ReverseProxy.BufferPool) instead of allocating one per response")
	quiet := flag.Bool("quiet", false, "discard per-request proxy error logs")
	certFile := flag.String("cert", "", "terminate TLS with this PEM certificate chain (with -key); net/http then offers HTTP/2 by ALPN")
	keyFile := flag.String("key", "", "the PEM private key of -cert")
	flag.Parse()

	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("goproxy: bad -upstream %q: %v", *upstream, err)
	}

	proxy := httputil.NewSingleHostReverseProxy(target)
	if *tuned {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 10000
		t.MaxIdleConnsPerHost = 10000
		t.IdleConnTimeout = 600 * time.Second
		proxy.Transport = t
	}
	if *bufpool {
		proxy.BufferPool = &bufferPool{}
	}
	if *quiet {
		proxy.ErrorLog = log.New(io.Discard, "", 0)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("goproxy: listen %s: %v", *listen, err)
	}
	srv := &http.Server{
		Handler:           proxy,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       600 * time.Second,
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		_ = srv.Close()
	}()

	mode := "default"
	if *tuned {
		mode = "tuned"
	}
	fmt.Fprintf(os.Stderr, "goproxy listening on %s (upstream %s, transport %s, bufpool %v, GOMAXPROCS=%d)\n",
		ln.Addr(), target, mode, *bufpool, runtime.GOMAXPROCS(0))
	if (*certFile == "") != (*keyFile == "") {
		log.Fatalf("goproxy: -cert and -key go together")
	}
	if *certFile != "" {
		err = srv.ServeTLS(ln, *certFile, *keyFile)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && err != http.ErrServerClosed {
		log.Fatalf("goproxy: serve: %v", err)
	}
}
