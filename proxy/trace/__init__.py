"""SIP capture (siptrace): what to capture (capture.py), HEP v3 encoding
(hep.py), pcap files (pcap.py) and call ladders (ladder.py).  Sans-I/O: the
worker edge (proxy/runtime/trace.py) does the sockets and the outbox."""
