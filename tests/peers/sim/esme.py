#!/usr/bin/env python3
"""A raw SMPP 3.4 ESME for testing `dmpushd sim` against an implementation nobody else on the
project wrote: PDUs are packed with `struct` from SMPP 3.4 §4 directly, and WDP datagrams are
split into SMS with the UDH of 3GPP TS 23.040 §9.2.3.24 here, not with dmpushd's codecs.

usage: esme.py --host H --port P [--system-id S] [--password W] [--bind trx|tx|rx]
               [--timeout 10] < spec.json

spec (JSON on stdin):
  {"submits": [
     {"to": "+15550100001", "from": "9200",
      "datagram_hex": "...", "ref_bits": 8|16, "ref": 66, "dport": 2948, "sport": 9200,
      "reverse": false,                       # send the parts last-first
      "registered_delivery": 1, "data_coding": 4},
     {"to": "...", "short_message_hex": "...", "esm_class": 64, "data_coding": 4,
      "tlvs": [{"tag": 523, "value_hex": "0b84"}]}],
   "enquire_link": true,
   "receipts": 2}                               # deliver_sm receipts to wait for

Output: one JSON object per line (bind_resp, submit_sm_resp, deliver_sm, enquire_link_resp,
generic_nack, unbind_resp, error). Exit 0 when the conversation finished, 1 on timeout/error.
"""
import argparse
import json
import socket
import struct
import sys
import time

BIND = {"trx": 0x09, "tx": 0x02, "rx": 0x01}
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK, GENERIC_NACK = 0x04, 0x05, 0x06, 0x15, 0x80000000
RESP = 0x80000000


def cstr(s):
    return s.encode("latin-1") + b"\0"


def pdu(cmd, seq, body=b"", status=0):
    return struct.pack(">IIII", 16 + len(body), cmd, status, seq) + body


def segments(datagram, dport, sport, ref_bits, ref):
    """UDH per TS 23.040: IEI 05 (16-bit ports) in every part, IEI 00/08 concatenation."""
    port_ie = bytes([0x05, 4]) + struct.pack(">HH", dport, sport)
    if 1 + len(port_ie) + len(datagram) <= 140:
        udh = port_ie
        return [bytes([len(udh)]) + udh + datagram]
    concat_len = 5 if ref_bits == 8 else 6
    per = 140 - 1 - len(port_ie) - concat_len
    parts = [datagram[i:i + per] for i in range(0, len(datagram), per)]
    out = []
    for n, p in enumerate(parts, 1):
        if ref_bits == 8:
            c = bytes([0x00, 3, ref & 0xFF, len(parts), n])
        else:
            c = bytes([0x08, 4]) + struct.pack(">H", ref & 0xFFFF) + bytes([len(parts), n])
        udh = port_ie + c
        out.append(bytes([len(udh)]) + udh + p)
    return out


def submit_body(to, frm, esm_class, data_coding, registered_delivery, sm, tlvs=()):
    body = cstr("")                                   # service_type
    body += bytes([5, 0]) + cstr(frm)                 # source ton/npi/addr
    body += bytes([1, 1]) + cstr(to.lstrip("+"))      # dest ton/npi/addr
    body += bytes([esm_class, 0, 0])                  # esm_class, protocol_id, priority
    body += cstr("") + cstr("")                       # schedule, validity
    body += bytes([registered_delivery, 0, data_coding, 0, len(sm)]) + sm
    for t in tlvs:
        v = bytes.fromhex(t["value_hex"])
        body += struct.pack(">HH", t["tag"], len(v)) + v
    return body


def read_cstr(b, o):
    e = b.index(0, o)
    return b[o:e].decode("latin-1"), e + 1


def parse_deliver(body):
    o = 0
    _, o = read_cstr(body, o)
    o += 2
    src, o = read_cstr(body, o)
    o += 2
    dst, o = read_cstr(body, o)
    esm = body[o]
    o += 3
    _, o = read_cstr(body, o)
    _, o = read_cstr(body, o)
    o += 4
    n = body[o]
    sm = body[o + 1:o + 1 + n]
    o += 1 + n
    tlv = {}
    while o + 4 <= len(body):
        t, l = struct.unpack(">HH", body[o:o + 4])
        tlv[t] = body[o + 4:o + 4 + l]
        o += 4 + l
    rid = tlv.get(0x001E)
    st = tlv.get(0x0427)
    return {
        "event": "deliver_sm", "from": src, "to": dst, "esm_class": esm,
        "short_message": sm.decode("latin-1"),
        "receipted_message_id": rid.rstrip(b"\0").decode("latin-1") if rid is not None else None,
        "message_state": st[0] if st else None,
    }


class Conn:
    def __init__(self, host, port, deadline):
        self.s = socket.create_connection((host, port), timeout=5)
        self.buf = b""
        self.deadline = deadline

    def send(self, b):
        self.s.sendall(b)

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= n:
                    p, self.buf = self.buf[:n], self.buf[n:]
                    _, cmd, status, seq = struct.unpack(">IIII", p[:16])
                    return cmd, status, seq, p[16:]
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for a PDU")
            self.s.settimeout(left)
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the SMSC")
            self.buf += chunk


def emit(o):
    print(json.dumps(o), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--system-id", default="esme")
    ap.add_argument("--password", default="")
    ap.add_argument("--bind", default="trx", choices=list(BIND))
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    spec = json.load(sys.stdin)
    c = Conn(a.host, a.port, time.monotonic() + a.timeout)
    seq = 1
    body = cstr(a.system_id) + cstr(a.password) + cstr("") + bytes([0x34, 0, 0]) + cstr("")
    c.send(pdu(BIND[a.bind], seq, body))
    receipts_wanted = spec.get("receipts", 0)
    receipts = 0
    pending = set()
    try:
        cmd, status, s, b = c.recv()
        sid = b.split(b"\0")[0].decode("latin-1") if b else ""
        emit({"event": "bind_resp", "command_id": cmd, "status": status, "system_id": sid})
        if status != 0:
            return 0
        if spec.get("enquire_link"):
            seq += 1
            c.send(pdu(ENQUIRE_LINK, seq))
            pending.add(seq)
        for sub in spec.get("submits", []):
            if "datagram_hex" in sub:
                parts = segments(bytes.fromhex(sub["datagram_hex"]), sub.get("dport", 2948),
                                 sub.get("sport", 9200), sub.get("ref_bits", 8), sub.get("ref", 66))
                if sub.get("reverse"):
                    parts.reverse()
                esm, tlvs = 0x40, ()
            else:
                parts = [bytes.fromhex(sub["short_message_hex"])]
                esm, tlvs = sub.get("esm_class", 0x40), sub.get("tlvs", ())
            for sm in parts:
                seq += 1
                c.send(pdu(SUBMIT_SM, seq, submit_body(
                    sub["to"], sub.get("from", "9200"), esm, sub.get("data_coding", 4),
                    sub.get("registered_delivery", 0), sm, tlvs)))
                pending.add(seq)
        while pending or receipts < receipts_wanted:
            cmd, status, s, b = c.recv()
            if cmd == SUBMIT_SM | RESP:
                mid = b.split(b"\0")[0].decode("latin-1") if b else ""
                emit({"event": "submit_sm_resp", "seq": s, "status": status, "message_id": mid})
                pending.discard(s)
            elif cmd == ENQUIRE_LINK | RESP:
                emit({"event": "enquire_link_resp", "status": status})
                pending.discard(s)
            elif cmd == DELIVER_SM:
                emit(parse_deliver(b))
                c.send(pdu(DELIVER_SM | RESP, s, b"\0"))
                receipts += 1
            elif cmd == GENERIC_NACK:
                emit({"event": "generic_nack", "status": status, "seq": s})
                pending.discard(s)
            else:
                emit({"event": "other", "command_id": cmd, "status": status})
        seq += 1
        c.send(pdu(UNBIND, seq))
        while True:
            cmd, status, s, b = c.recv()
            if cmd == UNBIND | RESP:
                emit({"event": "unbind_resp", "status": status})
                return 0
            if cmd == DELIVER_SM:
                emit(parse_deliver(b))
                c.send(pdu(DELIVER_SM | RESP, s, b"\0"))
    except (TimeoutError, ConnectionError, OSError) as e:
        emit({"event": "error", "error": str(e)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
