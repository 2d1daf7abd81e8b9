-- unwatch: drop one registration of watch.lua (finish() may have dropped it already).
-- ARGV: ttl, id.
if redis.call('HINCRBY', P .. 'watch', ARGV[2], -1) <= 0 then
  redis.call('HDEL', P .. 'watch', ARGV[2])
end
return 1
