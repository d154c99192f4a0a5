"""The performance lab: `veloxy suite` experiments, their reports and baselines, and the
process management `veloxy demo` and benchmarks/proxy_compare.py share.

    procs    child processes (veloxy, peers), /proc CPU and memory of a process tree
    peers    nginx, HAProxy and the Go httputil proxy, configured alike
    suite    the YAML model of an experiment, checked once with key paths
    runner   one origin, every target in front of it, cells interleaved across targets
    report   min/median/max over repetitions, ratios to a reference, baselines
    html     the self-contained HTML report with inline SVG plots
    cli      `veloxy suite` arguments and exit codes

Importing this package imports nothing else.
"""
