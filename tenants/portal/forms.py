from django import forms
from django.contrib.auth import password_validation

from tenants.models import ApiKey, Scope, TenantMembership


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “IVR production”.")
    kind = forms.ChoiceField(choices=ApiKey.Kind.choices, initial=ApiKey.Kind.TEST,
                             help_text="prod and test keys work alike; the prefix tells them apart in your code.")
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[Scope.SYNTHESIZE, Scope.VOICES])


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=TenantMembership.Role.choices, initial=TenantMembership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=TenantMembership.Role.choices)


class NewAccountForm(forms.Form):
    """The password of the account an invitation creates."""

    password1 = forms.CharField(label="Password", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                                help_text=password_validation.password_validators_help_text_html())
    password2 = forms.CharField(label="Password (again)",
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            raise forms.ValidationError("The two passwords differ.")
        if first:
            from django.contrib.auth import get_user_model

            password_validation.validate_password(first, get_user_model()(email=self.email, username=self.email))
        return cleaned
