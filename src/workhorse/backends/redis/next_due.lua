-- next_due: seconds until the next SCHEDULED or RETRYING job of the queues falls due (may be
-- negative), or nil if none waits. ARGV: ttl, queue...
local _, now = clock()
local soonest = nil
for i = 2, #ARGV do
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
