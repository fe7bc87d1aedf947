-- `succeeded` now outranks `failed` (collector/index/store.py CLIP_STATUS_RANK): a late `failed` must not replace a
-- delivered clip. Rows written before carry the old, equal rank.
UPDATE clips SET status_rank = 4 WHERE status = 'succeeded';
