"""The operator console at /console: server-rendered pages over the operator API's rules."""
