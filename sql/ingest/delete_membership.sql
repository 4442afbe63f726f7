DELETE FROM membership USING stage_membership AS s
WHERE membership.index_name = s.index_name
  AND membership.instrument = s.instrument
  AND membership.start_date = s.start_date
