"""Response policy: judging what the model answers (docs/policy.md, "Response policy").

shapes.py   an answer per API (chat, completions, responses), whole or streamed
judge.py    asking response policy about one answer; what the log records of it
stream.py   a streamed answer: stages over its events, checkpoints, holdback
whole.py    a whole answer: read within a bound and parsed
forward.py  on the request path: whether an answer is judged, and how it is sent
"""
