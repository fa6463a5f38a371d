-- Mark the stored result's Kafka outputs as acknowledged, if the stored result is still the one written.
-- KEYS[1] listing:{item_id}   ARGV: listing_version, model_version, mode ('model' | 'human')
local cur = redis.call('HMGET', KEYS[1], 'listing_version', 'model_version', 'label_source')
local same
if ARGV[3] == 'human' then
  same = cur[1] == ARGV[1] and cur[3] == 'human'
else
  same = cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] ~= 'human'
end
if same then
  redis.call('HSET', KEYS[1], 'outputs_pending', '0')
  return 1
end
return 0
