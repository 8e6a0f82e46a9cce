"""The tenant-staff portal (/portal/): server-rendered pages for a tenant's owners, admins and members.

Every page is a view built on `mixins.TenantPortalMixin` (login, membership of the current tenant, role checks,
lookups that start from the current tenant); views per area live in `views/`, URLs in `urls.py`, templates in
templates/portal/, the stylesheet and scripts in tenants/static/portal/."""
