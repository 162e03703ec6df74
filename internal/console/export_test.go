package console

// RegistrationBurst is registrationBurst, for the external tests.
const RegistrationBurst = registrationBurst
