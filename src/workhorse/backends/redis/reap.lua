-- reap: requeue RUNNING jobs whose lease expired or whose worker has not beaten for
-- worker_ttl seconds, their error set to the lost mark, and forget such workers. Such a job
-- whose cancel was asked for ends CANCELLED instead (cancel_unacked), and is not counted.
-- ARGV: ttl, worker_ttl, lost mark (base.WORKER_LOST). Returns jobs requeued.
local now_text, now = clock()
local gone, any_gone = {}, false
local cutoff = '(' .. num(now - tonumber(ARGV[2]))
local silent = redis.call('ZRANGEBYSCORE', P .. 'beats', '-inf', cutoff)
for _, worker in ipairs(silent) do
  gone[worker], any_gone = true, true
  redis.call('HDEL', P .. 'workers', worker)
  redis.call('ZREM', P .. 'beats', worker)
end
local victims = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. now_text)
if any_gone then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'running', 0, -1)) do
    local owner = redis.call('HGET', job_key(id), 'lease_owner')
    if owner and gone[owner] then victims[#victims + 1] = id end
  end
end
local requeued, seen = 0, {}
for _, id in ipairs(victims) do
  if not seen[id] then
    seen[id] = true
    local key = job_key(id)
    local f = redis.call('HMGET', key, 'state', 'name', 'queue', 'priority', 'seq',
      'cancel_requested')
    if f[1] == 'running' and f[6] then
      leave_running(key, id, f[2], f[3])
      cancel_unacked(key, id, f[3], now_text)
    elseif f[1] == 'running' then
      leave_running(key, id, f[2], f[3])
      redis.call('HSET', key, 'state', 'ready', 'error', ARGV[3])
      redis.call('HDEL', key, 'traceback')
      record_attempt(key, nil, ARGV[3], nil, now_text)
      ready_add(f[3], f[2], f[4], f[5], id)
      wake(f[3])
      requeued = requeued + 1
    else
      redis.call('ZREM', P .. 'running', id) -- a stale entry
    end
  end
end
return requeued
