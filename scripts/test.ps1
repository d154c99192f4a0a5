# PowerShell twin of scripts/test: installs veloxy with its test extras into the project
# virtualenv .venv (scripts/venv.ps1), then runs ruff, mypy and pytest. --quick deselects the
# tests that start a program or wait on purpose, as in scripts/test. On Windows the tests that
# start programs are skipped anyway, with their reason (tests/conftest.py).
#   pwsh scripts/test.ps1 [--quick] [pytest arguments]
# Native commands are checked through $LASTEXITCODE (ErrorActionPreference Stop would turn
# their stderr into errors under Windows PowerShell 5.1).
Set-Location (Join-Path $PSScriptRoot "..")
. (Join-Path $PSScriptRoot "venv.ps1")
$python = Install-Veloxy "[test]"
& $python -m ruff check --quiet src tests benchmarks
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
& $python -m mypy
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
$pytestArgs = @()
foreach ($arg in $args) {
    if ($arg -eq "--quick") { $pytestArgs += @("-m", "not process and not slow") }
    else { $pytestArgs += $arg }
}
& $python -m pytest -q @pytestArgs
exit $LASTEXITCODE
