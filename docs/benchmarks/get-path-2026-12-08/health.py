import http.client, sys, threading
def loop(n):
    c = http.client.HTTPConnection("127.0.0.1", 3913)
    for _ in range(n):
        c.request("GET", "/health"); c.getresponse().read()
ts = [threading.Thread(target=loop, args=(int(sys.argv[2]),), daemon=True) for _ in range(int(sys.argv[1]))]
[t.start() for t in ts]; [t.join() for t in ts]
