#!/usr/bin/env python3
"""Minimal PAP 2.0 load client for a PPG (Kannel wapbox): N pushes of a DM notification over C
keep-alive HTTP connections. usage: pap_load.py URL MSISDN COUNT CONC"""
import base64, http.client, re, sys, threading, urllib.parse, uuid

url, dest, count, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(url)
# 39-octet General Package #0 (protocol-facts D.8 example).
body = bytes.fromhex('d3290f1cbc08ea0e45867199db5cfcdf032800000012340f636f6d2e6578616d706c652e646d73')
auth = 'Basic ' + base64.b64encode(b'pi:pipw').decode()
ok = [0]
lock = threading.Lock()

def one(c):
    b = 'bnd' + uuid.uuid4().hex
    pap = ('<?xml version="1.0"?>\r\n<!DOCTYPE pap PUBLIC "-//WAPFORUM//DTD PAP//EN" '
           '"http://www.wapforum.org/DTD/pap_1.0.dtd">\r\n'
           f'<pap><push-message push-id="{uuid.uuid4().hex}@pi.example" progress-notes-requested="false">'
           f'<address address-value="WAPPUSH={dest}/TYPE=PLMN@ppg.example"/>'
           '<quality-of-service priority="low" delivery-method="unconfirmed" network-required="true" '
           'network="GSM" bearer-required="true" bearer="SMS"/></push-message></pap>')
    data = (f'--{b}\r\nContent-Type: application/xml\r\n\r\n{pap}\r\n--{b}\r\n'
            'Content-Type: application/vnd.syncml.notification\r\n'
            'X-Wap-Application-Id: x-wap-application:syncml.dm\r\n\r\n').encode() + body + f'\r\n--{b}--\r\n'.encode()
    c.request('POST', u.path, data, {
        'Content-Type': f'multipart/related; boundary={b}; type="application/xml"',
        'Authorization': auth, 'X-Wap-Application-Id': 'x-wap-application:syncml.dm'})
    r = c.getresponse()
    txt = r.read().decode(errors='replace')
    return r.status == 202 and re.search(r'code\s*=\s*"1001"', txt) is not None

def worker(n):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    good = sum(1 for _ in range(n) if one(c))
    with lock:
        ok[0] += good

per = [count // conc + (1 if i < count % conc else 0) for i in range(conc)]
ts = [threading.Thread(target=worker, args=(n,)) for n in per if n]
[t.start() for t in ts]
[t.join() for t in ts]
print(f'accepted={ok[0]}/{count}')
sys.exit(0 if ok[0] == count else 1)
