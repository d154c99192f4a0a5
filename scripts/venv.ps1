# Dot-sourced by scripts/demo.ps1 and scripts/test.ps1: the PowerShell twin of scripts/venv.sh
# (Windows, or pwsh on macOS and Linux). Picks the Python veloxy is installed into:
#   1. $env:PYTHON that is itself a virtualenv's Python: used as it is;
#   2. an active virtualenv ($env:VIRTUAL_ENV), when $env:PYTHON is not set: its Python;
#   3. otherwise the project virtualenv .venv ($env:VELOXY_VENV to put it elsewhere), made with
#      $env:PYTHON (default: python3 where there is one, else python) when missing.
# Installs veloxy there (pip install -e) once per change of pyproject.toml and setup.py.
# Not run here: no Windows or macOS runner was reachable (README, "Other platforms").

function Stop-Veloxy([string[]] $Lines) {
    foreach ($line in $Lines) { [Console]::Error.WriteLine("veloxy: $line") }
    exit 1
}

function Get-VenvPython([string] $Dir) {
    foreach ($candidate in @((Join-Path $Dir "Scripts/python.exe"), (Join-Path $Dir "bin/python"))) {
        if (Test-Path $candidate) { return $candidate }
    }
    return $null
}

function Test-VenvPython([string] $Python) {
    & $Python -c "import sys; sys.exit(sys.prefix == sys.base_prefix)" 2>$null
    return $LASTEXITCODE -eq 0
}

function Assert-VenvModule([string] $Base) {
    $version = & $Base -c "import sys; print('%d.%d' % sys.version_info[:2])" 2>$null
    if ($LASTEXITCODE -ne 0) {
        Stop-Veloxy @("cannot run '$Base'. Install Python 3.11 or newer (python.org, or",
                      "  winget install Python.Python.3.13), or set `$env:PYTHON to one.")
    }
    & $Base -c "import sys; sys.exit(sys.version_info < (3, 11))"
    if ($LASTEXITCODE -ne 0) {
        Stop-Veloxy @("veloxy needs Python 3.11 or newer; '$Base' is $version.",
                      "  Set `$env:PYTHON to a newer one.")
    }
    & $Base -c "import venv, ensurepip" 2>$null
    if ($LASTEXITCODE -ne 0) {
        Stop-Veloxy @("'$Base' (Python $version) lacks the venv or ensurepip module, which makes",
                      "the project virtualenv (.venv). Install a full Python (python.org's",
                      "installer has both; Debian, Ubuntu: sudo apt install python3-venv), or",
                      "activate a virtualenv of your own first.")
    }
}

function Get-VeloxyPython {
    if ($env:PYTHON -and (Test-VenvPython $env:PYTHON)) { return $env:PYTHON }
    if (-not $env:PYTHON -and $env:VIRTUAL_ENV) {
        $python = Get-VenvPython $env:VIRTUAL_ENV
        if (-not $python) { Stop-Veloxy @("VIRTUAL_ENV=$($env:VIRTUAL_ENV) has no Python; deactivate it or recreate it.") }
        return $python
    }
    $base = $env:PYTHON
    if (-not $base) {
        $base = if (Get-Command python3 -ErrorAction SilentlyContinue) { "python3" } else { "python" }
    }
    $venv = if ($env:VELOXY_VENV) { $env:VELOXY_VENV } else { ".venv" }
    $python = Get-VenvPython $venv
    if ($python) {
        & $python -m pip --version *> $null
        if ($LASTEXITCODE -eq 0) { return $python }
    }
    Assert-VenvModule $base
    [Console]::Error.WriteLine("veloxy: creating the project virtualenv $venv with $base")
    & $base -m venv --clear $venv | Out-Host
    if ($LASTEXITCODE -ne 0) { Stop-Veloxy @("'$base -m venv $venv' failed (above).") }
    return (Get-VenvPython $venv)
}

function Install-Veloxy([string] $Extras) {
    $python = Get-VeloxyPython
    $prefix = & $python -c "import sys; print(sys.prefix)"
    $suffix = if ($Extras) { "-test" } else { "" }
    $stamp = Join-Path $prefix ".veloxy-installed$suffix"
    $digest = ((Get-FileHash pyproject.toml).Hash + (Get-FileHash setup.py).Hash + (Get-Location).Path)
    if ((Test-Path $stamp) -and ((Get-Content $stamp -Raw).Trim() -eq $digest)) {
        & $python -c "import veloxy" 2>$null
        if ($LASTEXITCODE -eq 0) { return $python }
    }
    # Out-Host: what a native command prints would otherwise become the function's result
    & $python -m pip install --quiet --disable-pip-version-check -e ".$Extras" | Out-Host
    if ($LASTEXITCODE -ne 0) { Stop-Veloxy @("pip install -e .$Extras failed (above).") }
    Set-Content -Path $stamp -Value $digest -ErrorAction SilentlyContinue
    return $python
}
