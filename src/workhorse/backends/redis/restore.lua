-- restore: insert jobs exactly as given (none RUNNING), after the existing ones in enqueue
-- order. A job is skipped if its id exists, its idempotency key names another job, or it is
-- live and a live job holds its unique key.
-- ARGV: ttl, then 3 per job: fields (a JSON object of text values, absent when None: id,
-- name, queue, headers, priority, state, attempt, run_at, enqueued_at, timeout, started_at,
-- finished_at, status, error, traceback, checkin, checkin_at, unique_key, idempotency_key,
-- cancel_requested, attempts), payload, result?. Returns 1 per job written, 0 per job skipped.
local now_text = clock()
local LIVE = {scheduled = true, ready = true, retrying = true}
local OPTIONAL = {'timeout', 'started_at', 'finished_at', 'status', 'error', 'traceback',
  'checkin', 'checkin_at', 'unique_key', 'idempotency_key', 'cancel_requested', 'attempts'}
local done = {}

local function taken(m)
  if redis.call('EXISTS', job_key(m.id)) == 1 then return true end
  if m.idempotency_key then
    local first = redis.call('GET', P .. 'idem:' .. m.idempotency_key)
    if first and redis.call('EXISTS', job_key(first)) == 1 then return true end
  end
  if m.unique_key and LIVE[m.state] then
    local holder = redis.call('GET', P .. 'unique:' .. m.unique_key)
    local holder_state = holder and redis.call('HGET', job_key(holder), 'state')
    if holder_state and (LIVE[holder_state] or holder_state == 'running') then return true end
  end
  return false
end

for i = 2, #ARGV, 3 do
  local m = cjson.decode(ARGV[i])
  if taken(m) then
    done[#done + 1] = 0
  else
    local id, queue, state = m.id, m.queue, m.state
    local key = job_key(id)
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', key, 'id', id, 'name', m.name, 'queue', queue, 'payload', ARGV[i + 1],
      'headers', m.headers, 'priority', m.priority, 'state', state, 'attempt', m.attempt,
      'run_at', m.run_at, 'enqueued_at', m.enqueued_at, 'seq', seq)
    for _, field in ipairs(OPTIONAL) do
      if m[field] then redis.call('HSET', key, field, m[field]) end
    end
    local result = opt(ARGV[i + 2])
    if result then redis.call('HSET', key, 'result', result) end
    redis.call('ZADD', P .. 'jobs', seq, id)
    redis.call('SADD', P .. 'queues', queue)
    if m.idempotency_key then redis.call('SET', P .. 'idem:' .. m.idempotency_key, id) end
    if state == 'ready' then
      ready_add(queue, m.name, m.priority, seq, id)
      wake(queue)
    elseif state == 'scheduled' or state == 'retrying' then
      redis.call('ZADD', P .. state .. ':' .. queue, m.run_at, id)
      wake(queue)
    else
      local finished = m.finished_at or now_text
      redis.call('HSET', key, 'finished_at', finished)
      redis.call('ZADD', P .. 'finished', finished, id)
      redis.call('ZADD', P .. state .. ':' .. queue, finished, id)
      if RESULT_TTL > 0 then
        redis.call('PEXPIRE', key, RESULT_TTL)
        if m.idempotency_key then
          redis.call('PEXPIRE', P .. 'idem:' .. m.idempotency_key, RESULT_TTL)
        end
      end
    end
    if m.unique_key and LIVE[state] then
      redis.call('SET', P .. 'unique:' .. m.unique_key, id)
    end
    done[#done + 1] = 1
  end
end
return done
