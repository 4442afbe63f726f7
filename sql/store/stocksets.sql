SELECT DISTINCT index_name FROM membership ORDER BY index_name
