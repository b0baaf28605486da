@echo off
rem Test command: set up .venv with the test tools when needed, then run the whole test suite.
setlocal
cd /d "%~dp0"
set "BOOT=.venv\Scripts\python.exe"
if not exist "%BOOT%" (where py >nul 2>nul && (set "BOOT=py -3") || (set "BOOT=python"))
for /f "delims=" %%P in ('%BOOT% scripts\setup_env.py --dev') do set "PY=%%P"
if not defined PY exit /b 1
"%PY%" -m pytest tests %*
exit /b %ERRORLEVEL%
