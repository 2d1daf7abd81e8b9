-- open: record the data layout version of a new namespace; returns the recorded one.
-- ARGV: ttl, version.
local key = P .. 'version'
local version = redis.call('GET', key)
if version then return version end
redis.call('SET', key, ARGV[2])
return ARGV[2]
