@echo off
rem Automated mode: every setting comes from config.yaml; nothing is asked. Extra flags go to the pipeline.
setlocal
cd /d "%~dp0"
rem Python: the project's .venv first, then the py launcher, then python on PATH.
set "BOOT=.venv\Scripts\python.exe"
if not exist "%BOOT%" (where py >nul 2>nul && (set "BOOT=py -3") || (set "BOOT=python"))
for /f "delims=" %%P in ('%BOOT% scripts\setup_env.py') do set "PY=%%P"
if not defined PY exit /b 1
"%PY%" -m exmed_bert.pipeline --config config.yaml %*
exit /b %ERRORLEVEL%
