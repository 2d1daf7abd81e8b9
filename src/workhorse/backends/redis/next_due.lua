-- next_due: seconds until the next SCHEDULED or RETRYING job of the queues falls due (may be
-- negative), or nil if none waits. With a worker, it also leaves the worker's standing claim
-- on the queues for `hold` milliseconds (see common.lua; unwait.lua ends it).
-- ARGV: ttl, worker or "", lease seconds, token prefix, limits (JSON, as claim.lua's), hold,
-- queue...
local _, now = clock()
local worker = ARGV[2]
local FIRST_QUEUE = 7
if worker ~= '' then
  local key = waiter_key(worker)
  redis.call('HSET', key, 'lease', ARGV[3], 'prefix', ARGV[4], 'limits', ARGV[5])
  redis.call('PEXPIRE', key, ARGV[6])
  for i = FIRST_QUEUE, #ARGV do
    redis.call('SADD', idle_key(ARGV[i]), worker)
  end
end
local soonest = nil
for i = FIRST_QUEUE, #ARGV do
  for _, kind in ipairs({'scheduled:', 'retrying:'}) do
    local head = redis.call('ZRANGE', P .. kind .. ARGV[i], 0, 0, 'WITHSCORES')
    if head[2] then
      local due = tonumber(head[2])
      if not soonest or due < soonest then soonest = due end
    end
  end
end
if not soonest then return false end
return num(soonest - now)
