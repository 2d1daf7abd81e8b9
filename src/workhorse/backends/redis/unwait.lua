-- unwait: end a worker's standing claim (see common.lua) and take what was handed to it
-- meanwhile: returns the CLAIMED_COUNT fields of each such job, flat, each "" for none or
-- "=" and the value (as enqueue pushed them). ARGV: ttl, worker
local worker = ARGV[2]
redis.call('DEL', waiter_key(worker))
local inbox = inbox_key(worker)
local handed = redis.call('LRANGE', inbox, 0, -1)
if #handed > 0 then redis.call('DEL', inbox) end
return handed
