-- pause: stop claim from taking jobs of a queue (running ones go on). ARGV: ttl, queue.
redis.call('SADD', P .. 'paused', ARGV[2])
return 1
