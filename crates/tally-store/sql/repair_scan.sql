-- repair_scan: the oldest matches whose pipeline has not reached the totals.
--
-- $1 grace in seconds (a marker younger than this is work still in flight,
-- not lost), $2 at most this many matches. One row per match: match id, the
-- marker's generation, status, and whether predictions still wait for
-- scoring (finished) or voiding (postponed, cancelled). A final match with
-- none waiting has scored predictions whose points are not in the totals.
--
-- Each EXISTS stops at the first waiting prediction and walks the match's
-- predictions through their primary key (match first) otherwise: the cost
-- is bounded by $2 matches, whatever the size of the table.
SELECT p.match_id,
       p.generation,
       m.status,
       CASE
           WHEN m.status = 'finished' THEN EXISTS (
               SELECT 1 FROM predictions AS q WHERE q.match_id = p.match_id AND q.points IS NULL)
           WHEN m.status IN ('postponed', 'cancelled') THEN EXISTS (
               SELECT 1 FROM predictions AS q WHERE q.match_id = p.match_id AND NOT q.voided)
           ELSE false
       END AS waiting
FROM match_pipeline_pending AS p
JOIN matches AS m ON m.id = p.match_id
WHERE p.marked_at <= now() - make_interval(secs => $1::double precision)
ORDER BY p.marked_at, p.match_id
LIMIT $2
