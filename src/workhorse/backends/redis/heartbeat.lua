-- heartbeat: record a worker's beat and extend the leases it still holds.
-- ARGV: ttl, worker id, worker info (JSON), lease seconds, job id...
-- Returns {beat time, ids to cancel, ids lost}.
local worker, info, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now_text, now = clock()
redis.call('HSET', P .. 'workers', worker, info)
redis.call('ZADD', P .. 'beats', now_text, worker)
local expires = num(now + lease)
local cancel, lost = {}, {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'lease_owner', 'cancel_requested')
  if f[1] == 'running' and f[2] == worker then
    redis.call('HSET', key, 'lease_expires_at', expires)
    redis.call('ZADD', P .. 'running', expires, id)
    if f[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {now_text, cancel, lost}
