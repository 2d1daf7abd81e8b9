-- make_ready: move jobs in the given states to READY, due now, keeping their attempt count and
-- history; a job whose unique key a live job holds stays. By id, or by filters, at most
-- `chunk` per call (so that no call blocks Redis for long).
-- ARGV: ttl, states (comma-separated), id?, queue?, name?, chunk.
-- Returns {jobs moved, 1 if there may be more}.
local states = state_set(ARGV[2])
local job_id, queue, name, chunk = opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5]), tonumber(ARGV[6])
local now_text = clock()
local LIVE = {scheduled = true, ready = true, running = true, retrying = true}

-- Move one job if it matches; true if it left the index it was found in.
local function move(id)
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'queue', 'name', 'seq', 'priority', 'unique_key',
    'idempotency_key')
  local state, q, n, seq = f[1], f[2], f[3], f[4]
  if not state or not states[state] or (queue and q ~= queue) or (name and n ~= name) then
    return false
  end
  local unique = f[6]
  if unique then
    local holder = redis.call('GET', P .. 'unique:' .. unique)
    if holder and holder ~= id and LIVE[redis.call('HGET', job_key(holder), 'state') or ''] then
      return false
    end
  end
  if FINISHED[state] then
    redis.call('ZREM', P .. 'finished', id)
    redis.call('ZREM', P .. state .. ':' .. q, id)
    redis.call('PERSIST', key)
    if f[7] then
      local idem = P .. 'idem:' .. f[7]
      if redis.call('GET', idem) == id then redis.call('PERSIST', idem) end
    end
  else
    unqueue(id, state, q, n, seq)
  end
  if unique then redis.call('SET', P .. 'unique:' .. unique, id) end
  redis.call('HSET', key, 'state', 'ready', 'run_at', now_text)
  redis.call('HDEL', key, 'status', 'result', 'error', 'traceback', 'finished_at', 'checkin',
    'checkin_at', 'cancel_requested')
  ready_add(q, n, f[5], seq, id)
  redis.call('SADD', P .. 'queues', q)
  wake(q)
  return true
end

return for_matching(job_id, queue, name, states, chunk, move)
