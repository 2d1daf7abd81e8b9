-- workers: {id, info JSON, last beat} for every known worker. ARGV: ttl.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'beats', 0, -1)) do
  local info = redis.call('HGET', P .. 'workers', id)
  if info then
    out[#out + 1] = {id, info, redis.call('ZSCORE', P .. 'beats', id)}
  end
end
return out
