# N pipelined `GET /health` on one HTTP/1.1 connection, ROUNDS times; prints the p50, p90 and max of a round.
#   python3 pipelined.py N [ROUNDS]      (N = 1: one request at a time; ROUNDS defaults to 200)
import socket, time, sys
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
def once(s):
    req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * N
    t = time.perf_counter(); s.sendall(req)
    buf = b""
    while buf.count(b"HTTP/1.1 200") < N or not buf.endswith(b'{"status":"ok"}'):
        buf += s.recv(65536)
    return (time.perf_counter() - t) * 1000
s = socket.create_connection(("127.0.0.1", 3913))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ts = sorted(once(s) for _ in range(ROUNDS))
print(f"N={N} pipelined: p50 {ts[ROUNDS // 2]:.2f} ms  p90 {ts[ROUNDS * 9 // 10]:.2f}  max {ts[-1]:.2f}")
