-- stats: counts per queue and state, for every queue that has jobs or is paused. Drops the
-- index entries of expired finished jobs first, and forgets queues left with no job.
-- ARGV: ttl. Returns {now, {queue, paused, ready, scheduled, running, retrying, succeeded,
-- dead, cancelled, run_at of the oldest READY job at the head of the queue or ""}...}.
local now_text = clock()
sweep_expired(P .. 'finished', true)
local queues = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do queues[q] = true end
for _, q in ipairs(redis.call('SMEMBERS', P .. 'paused')) do queues[q] = true end
-- How many READY jobs per handler are looked at for the oldest: READY sets are ordered by
-- priority, so this is exact for the common case (one priority) and a bound otherwise.
local HEAD = 10
local rows = {}
for queue in pairs(queues) do
  for state in pairs(FINISHED) do
    sweep_expired(P .. state .. ':' .. queue, false)
  end
  local oldest = nil
  for _, name in ipairs(redis.call('SMEMBERS', names_key(queue))) do
    for _, member in ipairs(redis.call('ZRANGE', ready_key(queue, name), 0, HEAD - 1)) do
      local id = member_id(member)
      local run_at = id and tonumber(redis.call('HGET', job_key(id), 'run_at'))
      if run_at and (not oldest or run_at < oldest) then oldest = run_at end
    end
  end
  local counts = {
    ready_count(queue),
    redis.call('ZCARD', P .. 'scheduled:' .. queue),
    tonumber(redis.call('HGET', P .. 'running_by_queue', queue) or '0'),
    redis.call('ZCARD', P .. 'retrying:' .. queue),
    redis.call('ZCARD', P .. 'succeeded:' .. queue),
    redis.call('ZCARD', P .. 'dead:' .. queue),
    redis.call('ZCARD', P .. 'cancelled:' .. queue),
  }
  local total = 0
  for _, n in ipairs(counts) do total = total + n end
  local paused = redis.call('SISMEMBER', P .. 'paused', queue)
  if total == 0 and paused == 0 then
    redis.call('SREM', P .. 'queues', queue)
  else
    local row = {queue, paused}
    for _, n in ipairs(counts) do row[#row + 1] = n end
    row[#row + 1] = oldest and num(oldest) or ''
    rows[#rows + 1] = row
  end
end
return {now_text, rows}
