"""ClickHouse sink, DDL, finance views and reconciliation."""
