-- Apply one classification — a model result or a human review decision — to Redis atomically, by the rules:
--   * a higher listing_version wins; at equal listing_version a newer model version wins over an older one;
--   * a human decision for a listing_version wins over every model result for that listing_version (and older
--     ones): a replay or a backfill with any model never overwrites it; a newer listing_version from the seller
--     hands the item back to the model;
--   * a human decision applies only to the listing_version stored (an older or unknown one is refused).
-- KEYS[1] listing:{item_id}  KEYS[2] the updates stream  KEYS[3] the review queue (sorted set)
-- KEYS[4] the review decision counts (hash)
-- ARGV: item_id, listing_version, model_version, category_id, tags_json (sorted list of tag names),
--       fields_json (flat object of string fields for the hash), stream_maxlen, index_prefix_category,
--       index_prefix_tag, mode ('model' | 'human'), queued_at (ms, score in the review queue),
--       origin (the input record, topic:partition:offset; '' if unknown), digest (of the output record, all but
--       classified_at)
-- Returns {status, tags_json, prev_tags_json, pending}; status is
--   "applied": stored (hash, indexes, one stream entry), marked pending until the caller confirms that its
--              Kafka outputs were acknowledged (confirm_outputs.lua);
--   "same":    this result is already stored: nothing written. `pending` = "1" means the outputs of that write
--              were never confirmed (a crash in between) and this is the same input record again, answered the
--              same: the caller re-emits them; "0": nothing left to do — also for another record of the same
--              edit (same listing and model version: a duplicate, or a second edit the producer gave the same
--              listing_version, even in the same batch): the first stored wins, and its own outputs are sent by
--              whoever stored it. The same input record answered differently (int8 answers move a little with
--              their batch-mates; any field of the output record, not only category or tags) over an unconfirmed
--              write replaces it instead ("applied", its previous tags those before the unconfirmed write), so
--              what the caller then sends to Kafka is what Redis holds. A stored write without an origin (an older
--              worker's) is judged by its category and tags alone;
--   "stale":   (model) a newer result, or a human decision for this listing_version, is stored: nothing written;
--   "unknown_item" | "older_version" | "unknown_version": (human) refused, nothing written.
local key = KEYS[1]
local item = ARGV[1]
local lv = tonumber(ARGV[2])
local mv = tonumber(ARGV[3])
local cat = ARGV[4]
local tags_json = ARGV[5]
local mode = ARGV[10]
local origin = ARGV[12] or ''
local digest = ARGV[13] or ''
local cur = redis.call('HMGET', key, 'listing_version', 'model_version', 'category_id', 'tags', 'tags_prev',
  'outputs_pending', 'label_source', 'origin', 'result_digest')
local human_stored = cur[7] == 'human'
local replacing = false
if mode == 'human' then
  if not cur[1] then return {'unknown_item', '[]', '[]', '0'} end
  local clv = tonumber(cur[1])
  if lv < clv then return {'older_version', cur[4] or '[]', cur[5] or '[]', '0'} end
  if lv > clv then return {'unknown_version', cur[4] or '[]', cur[5] or '[]', '0'} end
  if human_stored and cur[3] == cat and cur[4] == tags_json then
    return {'same', cur[4] or '[]', cur[5] or '[]', cur[6] or '0'}
  end
elseif cur[1] then
  local clv = tonumber(cur[1])
  local cmv = tonumber(cur[2])
  if lv < clv or (lv == clv and (human_stored or mv < cmv)) then
    return {'stale', cur[4] or '[]', cur[5] or '[]', '0'}
  end
  if lv == clv and mv == cmv then
    if cur[6] ~= '1' then return {'same', cur[4] or '[]', cur[5] or '[]', cur[6] or '0'} end
    local stored_origin = cur[8] or ''
    local identical
    if stored_origin ~= '' and origin ~= '' then
      if stored_origin ~= origin then return {'same', cur[4] or '[]', cur[5] or '[]', '0'} end
      identical = cur[9] == digest
    else
      identical = cur[3] == cat and cur[4] == tags_json
    end
    if identical then return {'same', cur[4] or '[]', cur[5] or '[]', '1'} end
    replacing = true
  end
end
local old_tags_json = cur[4] or '[]'
local prev_tags_json = old_tags_json
if replacing then prev_tags_json = cur[5] or '[]' end
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
local function put(k, v)
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
put('listing_version', ARGV[2])
put('category_id', cat)
put('tags', tags_json)
put('tags_prev', prev_tags_json)
put('outputs_pending', '1')
put('label_source', mode)
if mode == 'human' then
  -- the model that classified this listing_version stays recorded in model_version
  if not human_stored then redis.call('HINCRBY', KEYS[4], fields['decision'] or 'decided', 1) end
  redis.call('ZREM', KEYS[3], item)
else
  put('model_version', ARGV[3])
  put('origin', origin)
  put('result_digest', digest)
  redis.call('HDEL', key, 'reviewer', 'decision', 'decided_at')
  if fields['needs_review'] == '1' then
    redis.call('ZADD', KEYS[3], ARGV[11], item)
  else
    redis.call('ZREM', KEYS[3], item)
  end
end
redis.call('HSET', key, unpack(flat))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'item_id', item, 'listing_version', ARGV[2], 'model_version', cur[2] and mode == 'human' and cur[2] or ARGV[3],
  'category_id', cat, 'tags', tags_json, 'source', fields['source'] or '', 'event_time', fields['event_time'] or '')
return {'applied', tags_json, prev_tags_json, '1'}
