#!/usr/bin/env node
// SMSC simulator for dmpushd's WAP binding tests, on the npm "smpp" package (server mode; an
// SMPP implementation nobody on the project wrote). Written for this repo, informed by the
// team's peer notes.
//
// Prints "LISTENING <port>" on stdout once bound (use --port 0 for a free port), then appends one
// JSON object per line to --log: every PDU received (raw hex), decoded submit_sm fields including
// the exact short_message bytes, and the delivery receipts it sends.
//
// usage: node smsc-sim.js --log FILE [--host 127.0.0.1] [--port 0] [--system-id ID --password PW]
//        [--submit-status N] [--throttle-first N] [--no-dlr] [--dlr-delay-ms 50]
//        [--dlr-form tlv|text] [--stats-every N]
'use strict';
const path = require('path');
const smpp = require(path.join(__dirname, 'node_modules', 'smpp'));
const fs = require('fs');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const flag = (name) => args.includes(name);
const HOST = opt('--host', '127.0.0.1');
const PORT = +opt('--port', '0');
const LOG = opt('--log', null);
const SYSID = opt('--system-id', null);
const PASSWORD = opt('--password', null);
const SUBMIT_STATUS = Number(opt('--submit-status', '0'));
let throttleLeft = Number(opt('--throttle-first', '0'));
const NO_DLR = flag('--no-dlr');
const DLR_DELAY = Number(opt('--dlr-delay-ms', '50'));
const DLR_FORM = opt('--dlr-form', 'tlv');
// Load tests: print "SUBMITS <count> <epoch ms>" on stdout for the first submit_sm and every Nth.
const STATS_EVERY = Number(opt('--stats-every', '0'));
let submitCount = 0;

// Keep the raw bytes of each incoming PDU (the library decodes short_message in place).
const origFromBuffer = smpp.PDU.prototype.fromBuffer;
smpp.PDU.prototype.fromBuffer = function (buf) {
  Object.defineProperty(this, '_raw', { value: Buffer.from(buf), enumerable: false });
  return origFromBuffer.call(this, buf);
};

function parseSubmitSm(raw) {
  let o = 16;
  const cstr = () => { const e = raw.indexOf(0, o); const s = raw.slice(o, e).toString('latin1'); o = e + 1; return s; };
  const u8 = () => raw[o++];
  const f = {};
  f.service_type = cstr(); f.source_addr_ton = u8(); f.source_addr_npi = u8(); f.source_addr = cstr();
  f.dest_addr_ton = u8(); f.dest_addr_npi = u8(); f.destination_addr = cstr();
  f.esm_class = u8(); f.protocol_id = u8(); f.priority_flag = u8();
  f.schedule_delivery_time = cstr(); f.validity_period = cstr();
  f.registered_delivery = u8(); f.replace_if_present_flag = u8(); f.data_coding = u8(); f.sm_default_msg_id = u8();
  f.sm_length = u8();
  f.short_message_hex = raw.slice(o, o + f.sm_length).toString('hex'); o += f.sm_length;
  f.tlvs = [];
  while (o + 4 <= raw.length) {
    const t = raw.readUInt16BE(o), l = raw.readUInt16BE(o + 2);
    f.tlvs.push({ tag: t, value_hex: raw.slice(o + 4, o + 4 + l).toString('hex') });
    o += 4 + l;
  }
  return f;
}

const out = LOG ? fs.openSync(LOG, 'a') : null;
function log(obj) {
  const line = JSON.stringify(Object.assign({ ts: new Date().toISOString() }, obj)) + '\n';
  if (out !== null) fs.writeSync(out, line); // synchronous: the test polls this file
}

let msgCounter = 0, sessionCounter = 0;
const server = smpp.createServer({ debug: false }, (session) => {
  const sid = ++sessionCounter;
  let bound = null;
  log({ event: 'connect', session: sid });
  session.on('error', (e) => log({ event: 'error', session: sid, error: String(e) }));
  session.on('close', () => log({ event: 'close', session: sid }));
  session.on('pdu', (pdu) => {
    log({ event: 'pdu', session: sid, command: pdu.command, seq: pdu.sequence_number,
          status: pdu.command_status, raw_hex: pdu._raw ? pdu._raw.toString('hex') : null });
  });
  const onBind = (pdu) => {
    session.pause();
    const ok = (!SYSID || pdu.system_id === SYSID) && (!PASSWORD || pdu.password === PASSWORD);
    log({ event: 'bind', session: sid, command: pdu.command, system_id: pdu.system_id,
          interface_version: pdu.interface_version, accepted: ok });
    session.send(pdu.response(ok ? { system_id: 'SIMSMSC' } : { command_status: 0x0d }));
    if (ok) { bound = pdu.command; session.resume(); } else { session.close(); }
  };
  session.on('bind_transceiver', onBind);
  session.on('bind_transmitter', onBind);
  session.on('bind_receiver', onBind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => { log({ event: 'unbind', session: sid }); session.send(pdu.response()); session.close(); });
  session.on('submit_sm', (pdu) => {
    submitCount++;
    if (STATS_EVERY && (submitCount === 1 || submitCount % STATS_EVERY === 0))
      process.stdout.write(`SUBMITS ${submitCount} ${Date.now()}\n`);
    const f = parseSubmitSm(pdu._raw);
    // The library's own reading of validity_period (relative 'R' or absolute), as ISO UTC.
    f.validity_decoded = pdu.validity_period instanceof Date ? pdu.validity_period.toISOString() : null;
    let st = SUBMIT_STATUS;
    if (throttleLeft > 0) { throttleLeft--; st = 0x58; } // ESME_RTHROTTLED
    if (st) {
      log(Object.assign({ event: 'submit_sm', session: sid, seq: pdu.sequence_number, answered_status: st,
                          raw_hex: pdu._raw.toString('hex') }, f));
      session.send(pdu.response({ command_status: st }));
      return;
    }
    const id = 'Sim' + (++msgCounter).toString(16).toUpperCase().padStart(8, '0');
    log(Object.assign({ event: 'submit_sm', session: sid, seq: pdu.sequence_number, message_id: id,
                        raw_hex: pdu._raw.toString('hex') }, f));
    session.send(pdu.response({ message_id: id }));
    if (!NO_DLR && (f.registered_delivery & 0x03) && bound !== 'bind_transmitter') {
      setTimeout(() => {
        const now = new Date(), d = (x) => String(x).padStart(2, '0');
        const ts = `${d(now.getUTCFullYear() % 100)}${d(now.getUTCMonth() + 1)}${d(now.getUTCDate())}${d(now.getUTCHours())}${d(now.getUTCMinutes())}`;
        const text = `id:${id} sub:001 dlvrd:001 submit date:${ts} done date:${ts} stat:DELIVRD err:000 text:`;
        const dlr = {
          source_addr_ton: f.dest_addr_ton, source_addr_npi: f.dest_addr_npi, source_addr: f.destination_addr,
          dest_addr_ton: f.source_addr_ton, dest_addr_npi: f.source_addr_npi, destination_addr: f.source_addr,
          esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'latin1'),
        };
        if (DLR_FORM === 'tlv') { dlr.receipted_message_id = id; dlr.message_state = 2; }
        session.deliver_sm(dlr, (resp) => log({ event: 'deliver_sm_resp', session: sid, message_id: id, status: resp.command_status }));
        log({ event: 'deliver_sm_sent', session: sid, message_id: id, text });
      }, DLR_DELAY);
    }
  });
});
server.on('error', (e) => { console.error('server error', e); process.exit(1); });
server.listen(PORT, HOST, () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
  log({ event: 'listening', port: server.address().port });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
// Exit with the parent (stdin closes): a test that dies must not leave the simulator behind.
// Scripts that manage the PID themselves pass --detached.
if (!flag('--detached')) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
