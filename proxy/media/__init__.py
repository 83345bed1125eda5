"""Media relay control: rtpengine's ng protocol, sans-I/O (the sockets are in proxy/runtime/ngclient.py)."""
