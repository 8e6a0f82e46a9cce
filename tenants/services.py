"""Writes over tenants, keys and usage."""
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from tenants import keys, selectors
from tenants.models import (
    ApiKey, AuditLogEntry, Invitation, QuotaAlert, Scope, Tenant, TenantMembership, UsageRecord,
)

logger = logging.getLogger(__name__)

Role = TenantMembership.Role

# last_used_at is informational: refreshing it at most once a minute keeps a write off every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown to the caller exactly once, never stored


def tenant_create(*, slug: str, name: str = "", **limits) -> Tenant:
    tenant = Tenant(slug=slug, name=name or slug, **limits)
    tenant.full_clean()
    tenant.save()
    return tenant


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    tenant.is_active = active
    tenant.save(update_fields=["is_active"])
    return tenant


def validate_scopes(scopes) -> list[str]:
    valid = set(Scope.values)
    unknown = [scope for scope in scopes if scope not in valid]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; expected any of {', '.join(Scope.values)}")
    # Keep the order stable and drop repeats.
    return [scope for scope in Scope.values if scope in set(scopes)]


def api_key_issue(*, tenant: Tenant, kind: str, scopes, name: str = "", expires_at=None, actor=None) -> IssuedKey:
    """A new key; `actor` (a staff user in the portal) is recorded in the tenant's audit log."""
    scopes = validate_scopes(scopes)
    plaintext, parsed = keys.generate_key(kind)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        kind=kind,
        lookup_id=parsed.lookup_id,
        secret_hash=keys.hash_secret(parsed.secret),
        last_four=plaintext[-4:],
        scopes=scopes,
        expires_at=expires_at,
    )
    if actor is not None:
        audit_record(tenant=tenant, actor=actor, action="api_key.created", target=_key_label(api_key),
                     details={"kind": kind, "scopes": scopes})
    return IssuedKey(api_key=api_key, plaintext=plaintext)


def api_key_revoke(*, api_key: ApiKey, actor=None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        if actor is not None:
            audit_record(tenant=api_key.tenant, actor=actor, action="api_key.revoked", target=_key_label(api_key))
    return api_key


def _key_label(api_key: ApiKey) -> str:
    return f"{api_key.name or 'unnamed'} ({api_key.display_prefix}…{api_key.last_four})"


def api_key_mark_used(*, api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


@dataclass(frozen=True)
class IssuedStreamToken:
    token: str  # shown to the caller once; the cache holds only its hash
    expires_in: int  # seconds


_STREAM_TOKEN_REFUSED = (
    "The stream token is invalid, expired or already used; get a new one from POST /v1/stream/token."
)


def stream_token_issue(*, api_key: ApiKey) -> IssuedStreamToken:
    """A single-use token that opens one WebSocket connection (/v1/stream?token=...) as `api_key`, for
    browsers, which cannot set an Authorization header on a WebSocket. It lives in the cache (Redis in
    production: any web process can redeem it) under its hash, and expires after TTS_STREAM_TOKEN_SECONDS."""
    token = keys.generate_stream_token()
    lifetime = settings.TTS_STREAM_TOKEN_SECONDS
    cache.set(keys.stream_token_cache_key(token), api_key.pk, timeout=lifetime)
    return IssuedStreamToken(token=token, expires_in=lifetime)


def stream_token_redeem(*, token: str) -> ApiKey:
    """The key a token was issued for, now that it is used up; raises selectors.KeyRejected for an unknown,
    expired or already used token, and for a key that is no longer usable (revoked since issuance...).
    Exactly one redemption wins: the cache's delete reports whether it removed the entry (Redis DEL is atomic),
    so of two connections racing with one token, the second finds nothing to delete."""
    cache_key = keys.stream_token_cache_key(token)
    api_key_id = cache.get(cache_key) if cache_key else None
    if api_key_id is None or not cache.delete(cache_key):
        raise selectors.KeyRejected("invalid_stream_token", _STREAM_TOKEN_REFUSED)
    return selectors.api_key_get_usable(api_key_id=api_key_id)


# A retry keeps the best outcome of its attempts: a failure after a success must not unbill it.
_OUTCOME_RANK = {UsageRecord.Status.ERROR: 0, UsageRecord.Status.CLIENT_DISCONNECTED: 1, UsageRecord.Status.SUCCESS: 2}


def usage_record(*, request_id, tenant_id: int, api_key_id: int | None, **fields) -> UsageRecord:
    """Write the request's usage row. A retry (the tenant's same request id) updates that row instead of adding
    one, so it is billed once; the row keeps the best outcome of its attempts and counts them."""
    with transaction.atomic():
        row, created = UsageRecord.objects.select_for_update().get_or_create(
            tenant_id=tenant_id, request_id=request_id, defaults={"api_key_id": api_key_id, **fields}
        )
        if not created:
            row.attempts += 1
            if _OUTCOME_RANK[fields["status"]] >= _OUTCOME_RANK[row.status]:
                for name, value in {"api_key_id": api_key_id, **fields}.items():
                    if value or name != "request_fingerprint":  # an early refusal knows no fingerprint
                        setattr(row, name, value)
            row.save()
    if row.characters and row.status != UsageRecord.Status.ERROR:  # only billed rows move the quota
        try:
            quota_alerts_check(tenant_id=tenant_id)
        except Exception:
            # An alert is never worth a lost usage row (the caller retries the write on a database error).
            logger.exception("tenant %s: quota alerts not checked", tenant_id)
    return row


# --- quota alerts: owners emailed once a month for each threshold (TTS_QUOTA_ALERT_PERCENTS) passed -------------

def quota_alerts_check(*, tenant_id: int) -> list[QuotaAlert]:
    """Record each threshold of the monthly quota that the tenant's usage has passed and that was not recorded yet
    this month, and email its owners once the rows are committed. Cheap for the usual request: a tenant without a
    quota costs one lookup, one whose thresholds are all recorded this month two; the month is summed only
    otherwise. Returns the alerts recorded now (a concurrent request that records one first wins it)."""
    quota = Tenant.objects.filter(pk=tenant_id).values_list("monthly_character_quota", flat=True).first()
    thresholds = settings.TTS_QUOTA_ALERT_PERCENTS
    if not quota or not thresholds:
        return []
    month = selectors.month_start().date()
    recorded = set(QuotaAlert.objects.filter(tenant_id=tenant_id, month=month).values_list("percent", flat=True))
    pending = [percent for percent in thresholds if percent not in recorded]
    if not pending:
        return []
    tenant = Tenant.objects.get(pk=tenant_id)
    used = selectors.tenant_characters_this_month(tenant=tenant)
    passed = [percent for percent in pending if used * 100 >= percent * quota]
    alerts = []
    for percent in passed:
        try:
            with transaction.atomic():
                alerts.append(QuotaAlert.objects.create(
                    tenant=tenant, month=month, percent=percent, characters_used=used, quota=quota
                ))
        except IntegrityError:
            pass  # another request passed it at the same moment and recorded it
    if alerts:
        from tenants.tasks import quota_alert_email_task

        # One email for the highest threshold passed: usage that jumps from 70% to 100% says so once.
        highest = alerts[-1].pk
        transaction.on_commit(lambda: quota_alert_email_task.delay(highest), robust=True)
    return alerts


def quota_alert_email(*, alert_id: int) -> int:
    """Email the tenant's owners that its usage passed the alert's threshold; idempotent (a redelivered task sends
    nothing again). Returns the number of recipients."""
    with transaction.atomic():
        alert = QuotaAlert.objects.select_for_update().select_related("tenant").filter(pk=alert_id).first()
        if alert is None or alert.emailed_at is not None:
            return 0
        tenant = alert.tenant
        owners = list(
            tenant.memberships.filter(role=Role.OWNER, user__is_active=True)
            .exclude(user__email="").values_list("user__email", flat=True).order_by("user__email")
        )
        if owners:
            context = {"alert": alert, "tenant": tenant, "left": max(alert.quota - alert.characters_used, 0),
                       "month": alert.month.strftime("%B %Y")}
            exhausted = alert.percent >= 100
            subject = (f"{tenant.name} has used its monthly quota" if exhausted
                       else f"{tenant.name} has used {alert.percent}% of its monthly quota")
            send_mail(
                subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{subject}",
                message=render_to_string("portal/email/quota_alert.txt", context),
                from_email=None,
                recipient_list=owners,
            )
        alert.emailed_at = timezone.now()
        alert.save(update_fields=["emailed_at"])
        return len(owners)


# --- the tenant-staff portal: audit log, staff users, members and invitations ---------------------------------

class PortalError(Exception):
    """A staff action that is not allowed as asked; the message is shown on the page."""


def audit_record(*, tenant: Tenant, actor, action: str, target: str = "", details: dict | None = None) -> AuditLogEntry:
    """Append a staff action to the tenant's audit log. `actor` is the user who acted (None: an operator or the
    system); `action` a dotted name such as api_key.created; `target` what was acted on, as staff would name it."""
    return AuditLogEntry.objects.create(
        tenant=tenant,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target=target[:200],
        details=details or {},
    )


def staff_user_get_or_create(*, email: str, password: str | None = None):
    """The staff user with this email (created if new; a given password is set either way). Their email address
    is recorded with allauth as verified: staff are invited or created by an operator, never sign up."""
    from allauth.account.models import EmailAddress

    email = email.strip().lower()
    User = get_user_model()
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        user = User(username=email[:150], email=email)
        user.set_password(password) if password else user.set_unusable_password()
        user.save()
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
    if not EmailAddress.objects.filter(user=user, email__iexact=email).exists():
        EmailAddress.objects.create(user=user, email=email, verified=True,
                                    primary=not EmailAddress.objects.filter(user=user, primary=True).exists())
    return user


def membership_set(*, tenant: Tenant, user, role: str) -> TenantMembership:
    """Make `user` a member of `tenant` with `role` (an operator's or an invitation's doing)."""
    if role not in Role.values:
        raise PortalError(f"unknown role {role!r}; expected one of {', '.join(Role.values)}")
    membership, _ = TenantMembership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
    return membership


def _may_assign(actor: TenantMembership, role: str, current_role: str | None = None) -> None:
    if not actor.is_manager:
        raise PortalError("Only owners and admins manage members.")
    if Role.OWNER in (role, current_role) and not actor.is_owner:
        raise PortalError("Only owners grant or take away the owner role.")


def member_invite(*, actor: TenantMembership, email: str, role: str, accept_url: Callable[[str], str]) -> Invitation:
    """Invite `email` to the actor's tenant with `role`: an email with a link that works once, for
    PORTAL_INVITATION_DAYS. Only the token's hash is stored; `accept_url(token)` makes the link."""
    tenant = actor.tenant
    email = email.strip().lower()
    _may_assign(actor, role)
    if tenant.memberships.filter(user__email__iexact=email).exists():
        raise PortalError(f"{email} is already a member of {tenant.name}.")
    sent_last_hour = tenant.invitations.filter(created_at__gte=timezone.now() - timedelta(hours=1)).count()
    if sent_last_hour >= settings.PORTAL_INVITATIONS_PER_HOUR:
        raise PortalError(f"{tenant.name} has sent {sent_last_hour} invitations in the last hour, the most it may "
                          "(PORTAL_INVITATIONS_PER_HOUR); try again later.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant, email=email, role=role, token_hash=keys.hash_secret(token), invited_by=actor.user,
        expires_at=timezone.now() + timedelta(days=settings.PORTAL_INVITATION_DAYS),
    )
    context = {"invitation": invitation, "url": accept_url(token), "inviter": actor.user}
    send_mail(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}You are invited to {tenant.name}",
        message=render_to_string("portal/email/invitation.txt", context),
        from_email=None,
        recipient_list=[email],
    )
    audit_record(tenant=tenant, actor=actor.user, action="member.invited", target=email, details={"role": role})
    return invitation


def invitation_cancel(*, actor: TenantMembership, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation (sent to a wrong address...): its link stops working at once."""
    _may_assign(actor, invitation.role)
    if invitation.is_usable():
        invitation.expires_at = timezone.now()
        invitation.save(update_fields=["expires_at"])
        audit_record(tenant=invitation.tenant, actor=actor.user, action="member.invitation_cancelled",
                     target=invitation.email, details={"role": invitation.role})
    return invitation


def invitation_accept(*, invitation: Invitation, user) -> TenantMembership:
    """Join the invitation's tenant as `user` (the invited email's account); the invitation is used up. Raises
    PortalError if it was used (also concurrently), expired, or `user` is not the invited address."""
    if user.email.lower() != invitation.email.lower():
        raise PortalError(f"This invitation is for {invitation.email}; you are logged in as {user.email}.")
    with transaction.atomic():
        # Single use even when the link is opened twice at once: only one update finds it unaccepted.
        taken = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True,
                                          expires_at__gt=timezone.now()).update(accepted_at=timezone.now(),
                                                                                accepted_by=user)
        if not taken:
            raise PortalError("This invitation has expired or has already been used.")
        existing = TenantMembership.objects.filter(tenant=invitation.tenant, user=user).first()
        # An invitation never lowers the role of someone who is already a member.
        membership = existing or membership_set(tenant=invitation.tenant, user=user, role=invitation.role)
        audit_record(tenant=invitation.tenant, actor=user, action="member.joined", target=user.email,
                     details={"role": membership.role})
    return membership


def invitation_accept_as_new_user(*, invitation: Invitation, password: str) -> TenantMembership:
    """Accept for an email that has no account yet: the account is created with `password`."""
    with transaction.atomic():
        user = staff_user_get_or_create(email=invitation.email)
        if user.has_usable_password():
            raise PortalError("An account with this email exists already: log in to accept the invitation.")
        user.set_password(password)
        user.save(update_fields=["password"])
        return invitation_accept(invitation=invitation, user=user)


def _other_owners_exist(membership: TenantMembership) -> bool:
    owners = TenantMembership.objects.select_for_update().filter(tenant=membership.tenant, role=Role.OWNER)
    return any(owner.pk != membership.pk for owner in owners)


def member_set_role(*, actor: TenantMembership, membership: TenantMembership, role: str) -> TenantMembership:
    """Change a member's role; a tenant always keeps at least one owner."""
    if role not in Role.values:
        raise PortalError(f"Unknown role {role!r}.")
    _may_assign(actor, role, membership.role)
    with transaction.atomic():
        if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners_exist(membership):
            raise PortalError("A tenant needs an owner: make someone else owner first.")
        previous = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(tenant=membership.tenant, actor=actor.user, action="member.role_changed",
                     target=membership.user.email, details={"from": previous, "to": role})
    return membership


def member_remove(*, actor: TenantMembership, membership: TenantMembership) -> None:
    """Remove a member from the tenant (their user stays: they may belong to other tenants); never the last owner."""
    _may_assign(actor, membership.role, membership.role)
    with transaction.atomic():
        if membership.role == Role.OWNER and not _other_owners_exist(membership):
            raise PortalError("The last owner cannot be removed: make someone else owner first.")
        membership.delete()
        audit_record(tenant=membership.tenant, actor=actor.user, action="member.removed",
                     target=membership.user.email, details={"role": membership.role})
