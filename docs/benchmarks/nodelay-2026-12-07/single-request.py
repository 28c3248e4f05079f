import socket, time, sys
N=int(sys.argv[1]) if len(sys.argv)>1 else 10
def once(s):
    req=b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"*N
    t=time.perf_counter(); s.sendall(req)
    buf=b""
    while buf.count(b"HTTP/1.1 200")<N or not buf.endswith(b'{"status":"ok"}'):
        buf+=s.recv(65536)
    return (time.perf_counter()-t)*1000
s=socket.create_connection(("127.0.0.1",3913))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ts=[once(s) for _ in range(5000)]
ts.sort()
print(f"N={N} pipelined: p50 {ts[2500]:.2f} ms  p90 {ts[4500]:.2f}  max {ts[-1]:.2f}")
