module veloxy.invalid/benchmarks/goproxy

go 1.19
