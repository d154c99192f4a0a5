# PowerShell twin of scripts/demo: installs veloxy into the project virtualenv .venv (made
# with python, or $env:PYTHON; an active virtualenv is used instead: scripts/venv.ps1) and
# runs `veloxy demo` with this script's arguments, e.g.  pwsh scripts/demo.ps1 --quick
# Native commands are checked through $LASTEXITCODE (ErrorActionPreference Stop would turn
# their stderr into errors under Windows PowerShell 5.1).
Set-Location (Join-Path $PSScriptRoot "..")
. (Join-Path $PSScriptRoot "venv.ps1")
$python = Install-Veloxy ""
& $python -m veloxy demo @args
exit $LASTEXITCODE
