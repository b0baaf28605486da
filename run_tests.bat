@echo off
rem Test command: set up .venv with the test tools when needed, then run the whole test suite.
setlocal
cd /d "%~dp0"
rem Python: the project's .venv first, then the py launcher, then python on PATH.
set "BOOT=.venv\Scripts\python.exe"
if exist "%BOOT%" goto have_boot
set "BOOT=python"
py -3 --version >nul 2>nul
if not errorlevel 1 set "BOOT=py -3"

rem have_boot: BOOT holds the Python that sets up .venv.
:have_boot
for /f "delims=" %%P in ('%BOOT% scripts\setup_env.py --dev') do set "PY=%%P"
if not defined PY exit /b 1
"%PY%" -m pytest tests %*
exit /b %ERRORLEVEL%
