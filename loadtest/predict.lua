-- wrk script: POST one prediction request per call.
--   wrk -t1 -c64 -d20s --latency -s loadtest/predict.lua http://127.0.0.1:8080
-- BATCH=1 (env) posts /v1/predict/batch with 32 items instead.
local batch = os.getenv("BATCH")
local token = os.getenv("TOKEN")
local row = "[0.12,-0.5,1.3,0.0,0.7,-1.1,0.25,0.9]"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if batch then
  local items = {}
  for i = 1, 32 do items[i] = '{"features":' .. row .. '}' end
  wrk.path = "/v1/predict/batch"
  wrk.body = '{"items":[' .. table.concat(items, ",") .. ']}'
else
  wrk.path = "/v1/predict"
  wrk.body = '{"game_id":"bench","features":' .. row .. '}'
end

local non2xx = 0
response = function(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end
