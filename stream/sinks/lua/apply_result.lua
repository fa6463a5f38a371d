-- Apply one classification to Redis atomically, unless it is older than what is stored.
-- KEYS[1] listing:{item_id}   KEYS[2] the updates stream
-- ARGV: item_id, listing_version, model_version, category_id, tags_json (sorted list of tag names),
--       fields_json (flat object of string fields for the hash), stream_maxlen, index_prefix_category, index_prefix_tag
-- Returns {status, tags_json, prev_tags_json, pending}; status is
--   "applied": stored (hash, indexes, one stream entry), marked pending until the caller confirms that its
--              Kafka outputs were acknowledged (confirm_outputs.lua);
--   "same":    this listing_version and model version are already stored: nothing written. `pending` = "1"
--              means the outputs of that write were never confirmed (a crash in between): the caller re-emits
--              them, with the stored tags and the tags before them; "0" means nothing is left to do;
--   "stale":   a newer listing_version, or a newer model at the same listing_version, is stored: nothing written.
local key = KEYS[1]
local item = ARGV[1]
local lv = tonumber(ARGV[2])
local mv = tonumber(ARGV[3])
local cat = ARGV[4]
local tags_json = ARGV[5]
local cur = redis.call('HMGET', key, 'listing_version', 'model_version', 'category_id', 'tags', 'tags_prev',
  'outputs_pending')
if cur[1] then
  local clv = tonumber(cur[1])
  local cmv = tonumber(cur[2])
  if lv < clv or (lv == clv and mv < cmv) then
    return {'stale', cur[4] or '[]', cur[5] or '[]', '0'}
  end
  if lv == clv and mv == cmv then
    return {'same', cur[4] or '[]', cur[5] or '[]', cur[6] or '0'}
  end
end
local old_tags_json = cur[4] or '[]'
local old_tags = cjson.decode(old_tags_json)
local new_tags = cjson.decode(tags_json)
local cat_prefix = ARGV[8]
local tag_prefix = ARGV[9]
if cur[3] and cur[3] ~= cat then
  redis.call('SREM', cat_prefix .. cur[3], item)
end
redis.call('SADD', cat_prefix .. cat, item)
local keep = {}
for _, t in ipairs(new_tags) do keep[t] = true end
for _, t in ipairs(old_tags) do
  if not keep[t] then redis.call('SREM', tag_prefix .. t, item) end
end
for _, t in ipairs(new_tags) do redis.call('SADD', tag_prefix .. t, item) end
local fields = cjson.decode(ARGV[6])
local flat = {}
for k, v in pairs(fields) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
flat[#flat + 1] = 'listing_version'
flat[#flat + 1] = ARGV[2]
flat[#flat + 1] = 'model_version'
flat[#flat + 1] = ARGV[3]
flat[#flat + 1] = 'category_id'
flat[#flat + 1] = cat
flat[#flat + 1] = 'tags'
flat[#flat + 1] = tags_json
flat[#flat + 1] = 'tags_prev'
flat[#flat + 1] = old_tags_json
flat[#flat + 1] = 'outputs_pending'
flat[#flat + 1] = '1'
redis.call('HSET', key, unpack(flat))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'item_id', item, 'listing_version', ARGV[2], 'model_version', ARGV[3], 'category_id', cat,
  'tags', tags_json, 'source', fields['source'] or '')
return {'applied', tags_json, old_tags_json, '1'}
