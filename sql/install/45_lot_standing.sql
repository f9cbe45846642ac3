-- ---------------------------------------------------------------------------------------------
-- What a project can still spend, lot by lot: the usage accrued and not yet deducted drawn from
-- its lots as the hourly deduction will draw it (src/lots.c does both), so that
-- available_balance, the runway, the starts and the cut-offs agree with the deduction.
-- ---------------------------------------------------------------------------------------------

-- What is left of each lot (given in draw-down order) once the hours (given oldest first, with
-- their kind bits and amounts) have drawn on them; src/lots.c.
CREATE FUNCTION credits._lots_left(lot_left credits.credits[], lot_expires timestamptz[], lot_kinds integer[],
                                   hour_start timestamptz[], hour_kind integer[], hour_amount credits.credits[])
    RETURNS credits.credits[]
    AS 'MODULE_PATHNAME', 'credits_lots_left' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- What each hour (given in the deduction's order, with their kind bits and amounts) takes from
-- the lots (given in draw-down order); the rest of its amount it would leave uncollected.
-- src/lots.c, the same draw-down as credits._lots_left.
CREATE FUNCTION credits._lots_paid(lot_left credits.credits[], lot_expires timestamptz[], lot_kinds integer[],
                                   hour_start timestamptz[], hour_kind integer[], hour_amount credits.credits[])
    RETURNS credits.credits[]
    AS 'MODULE_PATHNAME', 'credits_lots_paid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Each project's active lots as arrays in draw-down order: lowest priority, soonest expiry
-- (none last), promotional before paid, oldest; what usage may take of each (pending refunds
-- hold their part), its expiry and its kind bits.  Read it with a project_id filter.
CREATE VIEW credits._lot_queue AS
SELECT l.project_id,
       array_agg(l.transaction_id ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                           l.created_at, l.transaction_id) AS ids,
       array_agg(l.remaining - l.held ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                              l.created_at, l.transaction_id) AS lefts,
       array_agg(l.expires_at ORDER BY l.priority, l.expires_at NULLS LAST, l.kind DESC,
                                       l.created_at, l.transaction_id) AS expires,
       array_agg(credits._kind_mask(l.applies_to) ORDER BY l.priority, l.expires_at NULLS LAST,
                                                        l.kind DESC, l.created_at, l.transaction_id) AS kinds
  FROM credits.credit_lots l
 WHERE l.active
 GROUP BY l.project_id;

-- Each project's usage accrued and not yet deducted as arrays in the deduction's order: oldest
-- hour first, within an hour stored rows by id, then the others by resource id in byte order;
-- each hour's row id (null while not stored), resource, description, start, kind bit and charge.
-- Read it with a project_id filter.  (Each hour's resource is looked up by its key: a join
-- would read every resource the project ever had, whatever it accrues.)
CREATE VIEW credits._accrued_queue AS
SELECT u.project_id,
       array_agg(u.transaction_id ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS ids,
       array_agg(u.resource_id ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS resource_ids,
       array_agg(u.description ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS descriptions,
       array_agg(u.usage_hour ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS hours,
       array_agg(CASE (SELECT r.kind FROM credits.resources r
                        WHERE r.project_id = u.project_id AND r.resource_id = u.resource_id)
                 WHEN 'instance' THEN 1 WHEN 'volume' THEN 2 ELSE 4 END
                 ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS kinds,
       array_agg(-u.amount ORDER BY u.usage_hour, u.transaction_id NULLS LAST, u.resource_id COLLATE "C") AS amounts
  FROM credits.usage_in_progress u
 GROUP BY u.project_id;

-- Each active lot with what usage may still take of it once the usage accrued and not yet
-- deducted has drawn on it (credits._lots_left).  Read it with a project_id filter: it reaches
-- both sides.  (A view, not a function: it reads the tables with its owner's rights when a
-- reader's view reads it.)
CREATE VIEW credits._lot_standing AS
SELECT lots.project_id, x.transaction_id, x.left_over, x.expires_at, x.kinds
  FROM credits._lot_queue lots
  LEFT JOIN credits._accrued_queue accrued ON accrued.project_id = lots.project_id,
       unnest(lots.ids, credits._lots_left(lots.lefts, lots.expires, lots.kinds,
                                           coalesce(accrued.hours, '{}'), coalesce(accrued.kinds, '{}'),
                                           coalesce(accrued.amounts, '{}')),
              lots.expires, lots.kinds) AS x(transaction_id, left_over, expires_at, kinds);

-- What the hours given (in the deduction's order, with their kind bits and amounts) would take
-- from the project's lots (credits._lots_paid over credits._lot_queue).  SECURITY DEFINER: the
-- history's readers may not read the lots; a function, not a join of the two grouped views, so
-- that the planner's estimate of that join (every project's lots by every project's hours) does
-- not make it compile the history of one project.
CREATE FUNCTION credits._lots_paid_for(project_id bigint, hour_start timestamptz[], hour_kind integer[],
                                       hour_amount credits.credits[]) RETURNS credits.credits[]
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
BEGIN ATOMIC
    SELECT credits._lots_paid(coalesce(q.lefts, '{}'), coalesce(q.expires, '{}'), coalesce(q.kinds, '{}'),
                              _lots_paid_for.hour_start, _lots_paid_for.hour_kind, _lots_paid_for.hour_amount)
      FROM (VALUES (_lots_paid_for.project_id)) AS p(project_id)
      LEFT JOIN credits._lot_queue q ON q.project_id = p.project_id;
END;

-- Each hour of usage accrued and not yet deducted, with its charge and what it would take from
-- the project's lots if it were deducted now (credits._lots_paid_for, in the deduction's order):
-- the accumulating rows of credits.transaction_history.  Read it with a project_id filter.
CREATE VIEW credits._accrued_taken AS
SELECT accrued.project_id, x.transaction_id, x.resource_id, x.usage_hour, x.description, x.charge, x.taken
  FROM credits._accrued_queue accrued,
       unnest(accrued.ids, accrued.resource_ids, accrued.descriptions, accrued.hours, accrued.amounts,
              credits._lots_paid_for(accrued.project_id, accrued.hours, accrued.kinds, accrued.amounts))
           AS x(transaction_id, resource_id, description, usage_hour, charge, taken);

-- What a project can still spend on the kinds in kind_bits (instance 1, volume 2, api 4) for
-- usage that begins at as_of: what its lots that may pay for it have left after the accrued usage.
CREATE FUNCTION credits._spendable(project_id bigint, kind_bits integer, as_of timestamptz)
    RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(x.left_over), '0'::credits.credits)
      FROM credits._lot_standing x
     WHERE x.project_id = _spendable.project_id
       AND (x.kinds & _spendable.kind_bits) <> 0 AND (x.expires_at IS NULL OR x.expires_at > _spendable.as_of);
END;

-- What of a project's balance nothing may spend on its instances or volumes now: what its lots
-- hold less what those that may pay for them (this hour) have left after the accrued usage
-- (with lots all alike: the accrued usage, up to the balance).  The zero-balance trigger
-- (sql/install/44_zero_balance.sql) lifts a depleted project whose new balance is above it; a
-- new lot is written before the balance it raises.
CREATE FUNCTION credits._lift_threshold(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(l.remaining), '0'::credits.credits)
           - credits._spendable(_lift_threshold.project_id, 3, credits.hour_of(credits.now()))
      FROM credits.credit_lots l
     WHERE l.project_id = _lift_threshold.project_id AND l.active;
END;

-- What a project can spend on anything now, lot by lot (credits._spendable).  SECURITY DEFINER:
-- balance_overview calls it for projects whose lots are not all alike, for readers who may not
-- read the tables (and, never inlined, its plan stays out of the view's).
CREATE FUNCTION credits._lots_available(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._spendable(project_id, 7, credits.now());

-- What the project can still spend: its lots (those not expired) less the usage accrued and not
-- yet deducted and less pending refunds, never below zero.  Without grants or refunds that is
-- the balance less the accrued usage (credits._available).  An unknown project raises P0002 (and a null one 22004)
-- rather than answering null.
CREATE FUNCTION credits.available_balance(project_id bigint) RETURNS credits.credits
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
    SELECT credits._lots_available(a.project_id)
      FROM credits.accounts a
     WHERE a.project_id = (SELECT credits._require_account(available_balance.project_id));
$$;

-- Applies the zero-balance rule kind by kind to a project whose lots are not all alike (some
-- expire, pay only for some kinds, or are held by a refund), or that is cut off, at time at: its instances are cut
-- off when no lot that may pay for the current hour of an instance has anything left after the
-- accrued usage, its volumes likewise; with neither left the whole project is depleted (as at
-- zero balance); a volume lot with something left makes locked volumes available again.  Other
-- projects are left to the rule of the balance (credits._due_projects, src/zero_balance.c).
-- Returns whether it acted.
CREATE FUNCTION credits._enforce_lots(project_id bigint, at timestamptz) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    hour timestamptz := credits.hour_of(at);
    is_depleted boolean;
    for_instances credits.credits;
    for_volumes credits.credits;
    acted boolean := false;
BEGIN
    SELECT a.depleted INTO is_depleted FROM credits.accounts a
     WHERE a.project_id = _enforce_lots.project_id FOR NO KEY UPDATE;
    IF NOT is_depleted
       AND NOT EXISTS (SELECT FROM credits.credit_lots l
                        WHERE l.project_id = _enforce_lots.project_id AND l.active
                          AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL OR l.held > '0'::credits.credits)) THEN
        RETURN false;
    END IF;
    for_instances := credits._spendable(project_id, 1, hour);
    for_volumes := credits._spendable(project_id, 2, hour);
    IF NOT is_depleted AND for_instances <= '0'::credits.credits AND for_volumes <= '0'::credits.credits THEN
        UPDATE credits.accounts a SET depleted = true WHERE a.project_id = _enforce_lots.project_id;
        RETURN true;
    ELSIF is_depleted AND (for_instances > '0'::credits.credits OR for_volumes > '0'::credits.credits) THEN
        UPDATE credits.accounts a SET depleted = false WHERE a.project_id = _enforce_lots.project_id;
        acted := true;
    ELSIF is_depleted THEN
        RETURN false;
    END IF;
    IF for_instances <= '0'::credits.credits
       AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                      AND r.state = 'running') THEN
        PERFORM credits._cut_off_resources(project_id, ARRAY['instance'], at);
        acted := true;
    END IF;
    IF for_volumes <= '0'::credits.credits
       AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                      AND r.state = 'available') THEN
        PERFORM credits._cut_off_resources(project_id, ARRAY['volume'], at);
        acted := true;
    ELSIF for_volumes > '0'::credits.credits
          AND EXISTS (SELECT FROM credits.resources r WHERE r.project_id = _enforce_lots.project_id
                                                         AND r.state = 'inaccessible') THEN
        PERFORM credits._restore_volumes(project_id, at);
        acted := true;
    END IF;
    RETURN acted;
END $$;
