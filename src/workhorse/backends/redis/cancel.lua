-- cancel: a queued job becomes CANCELLED (499) at once; a RUNNING one is flagged for its
-- worker. ARGV: ttl, id. Returns the job's state afterwards, or nil if there is no such job.
local id = ARGV[2]
local key = job_key(id)
local f = redis.call('HMGET', key, 'state', 'queue', 'name', 'seq')
local state = f[1]
if not state then return false end
if state == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1')
  return state
end
if not unqueue(id, state, f[2], f[3], f[4]) then return state end
local now_text = clock()
redis.call('HSET', key, 'error', 'cancelled')
finish(key, id, f[2], 'cancelled', 499, now_text)
return 'cancelled'
