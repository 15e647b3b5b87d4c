#!/usr/bin/env node
// An ESME on the npm "smpp" package (client mode; an SMPP stack nobody on the project wrote), used
// to check that `dmpushd sim`'s SMSC interoperates with it: bind_transceiver, enquire_link,
// submit_sm with raw UDH user data, delivery receipts (decoded by the library), unbind.
// Written for this repo; the package is installed by scripts/install.d/wap.sh (tests/peers/smpp).
//
// usage: node esme-npm.js --port P --to MSISDN [--timeout-ms 10000] HEX_SHORT_MESSAGE...
// Prints one JSON object per line; exit 0 when every submit got a response and every accepted
// one a receipt.
'use strict';
const path = require('path');
const smpp = require(path.join(__dirname, '..', 'smpp', 'node_modules', 'smpp'));

const args = process.argv.slice(2);
const opt = (n, d) => { const i = args.indexOf(n); return i >= 0 ? args.splice(i, 2)[1] : d; };
const PORT = +opt('--port', '2775');
const TO = opt('--to', '15550000000');
const TIMEOUT = +opt('--timeout-ms', '10000');
const messages = args.map((h) => Buffer.from(h, 'hex'));
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const timer = setTimeout(() => { out({ event: 'error', error: 'timeout' }); process.exit(1); }, TIMEOUT);
const session = smpp.connect({ url: `smpp://127.0.0.1:${PORT}` });
session.on('error', (e) => { out({ event: 'error', error: String(e) }); process.exit(1); });
let accepted = 0, responses = 0, receipts = 0;
const finish = () => {
  if (responses === messages.length && receipts === accepted) {
    session.unbind(() => { out({ event: 'unbind_resp' }); clearTimeout(timer); session.close(); process.exit(0); });
  }
};
session.on('deliver_sm', (pdu) => {
  out({
    event: 'deliver_sm', esm_class: pdu.esm_class,
    text: pdu.short_message && pdu.short_message.message !== undefined ? String(pdu.short_message.message) : null,
    receipted_message_id: pdu.receipted_message_id || null,
    message_state: pdu.message_state === undefined ? null : pdu.message_state,
  });
  session.send(pdu.response());
  receipts++;
  finish();
});
session.bind_transceiver({ system_id: 'npm-esme', password: 'pw' }, (pdu) => {
  out({ event: 'bind_resp', status: pdu.command_status, system_id: pdu.system_id });
  if (pdu.command_status !== 0) process.exit(1);
  session.enquire_link({}, (r) => out({ event: 'enquire_link_resp', status: r.command_status }));
  for (const m of messages) {
    session.submit_sm({
      destination_addr: TO, source_addr: '9200', esm_class: 0x40, data_coding: 0x04,
      registered_delivery: 1, short_message: m,
    }, (r) => {
      out({ event: 'submit_sm_resp', status: r.command_status, message_id: r.message_id });
      responses++;
      if (r.command_status === 0) accepted++;
      finish();
    });
  }
});
