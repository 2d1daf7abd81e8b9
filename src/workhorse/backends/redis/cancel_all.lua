-- cancel_all: cancel the live jobs matching a queue and/or a handler name, at most `chunk`
-- queued ones per call (so that no call blocks Redis for long).
-- ARGV: ttl, queue?, name?, flag running jobs too ("1"/"0"), chunk.
-- Returns {running jobs flagged, queued jobs cancelled, 1 if there may be more}.
local queue, name = opt(ARGV[2]), opt(ARGV[3])
local flag_running, chunk = ARGV[4] == '1', tonumber(ARGV[5])
local now_text = clock()
local flagged = 0

if flag_running then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'running', 0, -1)) do
    local key = job_key(id)
    local f = redis.call('HMGET', key, 'state', 'queue', 'name')
    if f[1] == 'running' and (not queue or f[2] == queue) and (not name or f[3] == name) then
      redis.call('HSET', key, 'cancel_requested', '1')
      flagged = flagged + 1
    end
  end
end

local QUEUED = {ready = true, scheduled = true, retrying = true}

-- Cancel one queued job if it matches; true if it left the index it was found in.
local function cancel_one(id)
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'queue', 'name', 'seq')
  if not QUEUED[f[1]] or (queue and f[2] ~= queue) or (name and f[3] ~= name) then
    return false
  end
  unqueue(id, f[1], f[2], f[3], f[4])
  redis.call('HSET', key, 'error', 'cancelled')
  finish(key, id, f[2], 'cancelled', 499, now_text)
  return true
end

local done = for_matching(nil, queue, name, QUEUED, chunk, cancel_one)
return {flagged, done[1], done[2]}
