INSERT INTO membership BY NAME SELECT * FROM stage_membership
