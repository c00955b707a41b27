"""What callers have used: counted per window, shown to policy as ``input.usage``.

windows.py   the fixed windows (the current minute, the current day) on an injectable clock
counters.py  the counters behind one protocol: in the process, or in Redis for many replicas
batching.py  group commit: requests that need Redis at the same moment share one command
sse.py       an incremental splitter of Server-Sent Events
meter.py     the tokens of one answer, read from the upstream's ``usage``
tap.py       the meter on the relay: sees each chunk, drops the usage event it asked for
ledger.py    the request path's one entry: charge a request, refund it, add its tokens
"""
