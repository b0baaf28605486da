@echo off
rem Interactive mode: a step-by-step wizard asks for the data, dataset and ClinVec settings, then runs the pipeline.
setlocal
cd /d "%~dp0"
set "BOOT=.venv\Scripts\python.exe"
if not exist "%BOOT%" (where py >nul 2>nul && (set "BOOT=py -3") || (set "BOOT=python"))
for /f "delims=" %%P in ('%BOOT% scripts\setup_env.py') do set "PY=%%P"
if not defined PY exit /b 1
"%PY%" -m exmed_bert.cli.wizard --config config.yaml %*
exit /b %ERRORLEVEL%
