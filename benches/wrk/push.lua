-- wrk script: POST /v1/pushes with a DM message due tomorrow (so only the accept path is measured).
-- wrk -t2 -c256 -d10s -s benches/wrk/push.lua http://127.0.0.1:18080/v1/pushes
local nb = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 86400)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.body = '{"device":"bench-dev","not_before":"' .. nb .. '","ttl_seconds":172800,' ..
  '"body":"<SyncML xmlns=\\"SYNCML:SYNCML1.2\\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>' ..
  '<SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:490154203237518</LocURI></Target>' ..
  '<Source><LocURI>https://dms.example</LocURI></Source></SyncHdr><SyncBody><Alert><CmdID>1</CmdID>' ..
  '<Data>1200</Data></Alert><Final/></SyncBody></SyncML>"}'
