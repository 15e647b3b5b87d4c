-- wrk script: the same request body to the no-op endpoint (the HTTP ceiling of the machine).
dofile("benches/wrk/push.lua")
