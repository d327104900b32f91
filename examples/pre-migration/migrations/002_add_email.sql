-- the migration this stack protects; edit it and `pulumi up` takes a new restore point first
ALTER TABLE customers ADD COLUMN email TEXT;
UPDATE customers SET email = lower(name) || '@example.test';
